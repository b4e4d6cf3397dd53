package main

import (
	"context"
	"errors"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// IoT hubs linked to the organisation's DPS: zerotouch hub ….

func newHubCmd(o *clientOptions) *cobra.Command {
	cmd := newGroupCmd("hub", "Manage the IoT hubs Azure DPS registrations are allocated to",
		newHubAddCmd(o),
		newHubListCmd(o),
		newHubShowCmd(o),
		newHubUpdateCmd(o),
		newHubRemoveCmd(o),
	)
	cmd.Long = "Manage the IoT hubs linked to the organisation's Azure DPS, as DPS links IoT hubs to a\n" +
		"provisioning service. Devices registering through DPS are allocated, by their enrollment's\n" +
		"policy (static, hashed, geoLatency, custom), to one of the enabled hubs: the server's own built-in\n" +
		"hub (set by serve --hub-name and --hub-region, always a candidate) and the hubs registered here.\n" +
		"A hub's name is the host name[:port] devices are told, verbatim; names are case-insensitive.\n" +
		"Weight is the hub's share of new devices under hashed (0: none); region is compared, under\n" +
		"geoLatency, with the region serve --region-map gives the device's source address."
	cmd.Aliases = []string{"hubs"}
	return cmd
}

func newHubAddCmd(o *clientOptions) *cobra.Command {
	var (
		weight   int
		region   string
		disabled bool
	)
	cmd := &cobra.Command{
		Use:   "add NAME [--weight N] [--region R] [--disabled]",
		Short: "Register (link) an IoT hub for DPS allocation",
		Example: "  zerotouch hub add hub-eu.example.com:8883 --region eu-west\n" +
			"  zerotouch hub add hub-us.example.com --weight 3 --region us-east --disabled",
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			req := api.CreateHubRequest{Name: args[0], Region: region}
			if cmd.Flags().Changed("weight") {
				req.Weight = &weight
			}
			if disabled {
				enabled := false
				req.Enabled = &enabled
			}
			h, err := c.CreateHub(ctx, req)
			if err != nil {
				return err
			}
			return o.print(cmd, h, func(w io.Writer) { hubFields(w, &api.HubInfo{Hub: *h}) })
		}),
	}
	f := cmd.Flags()
	f.IntVar(&weight, "weight", registry.DefaultHubWeight, "share of new devices under the hashed policy (0: takes no new devices)")
	f.StringVar(&region, "region", "", "where the hub is, for the geoLatency policy (letters, digits, - _ .)")
	f.BoolVar(&disabled, "disabled", false, "register it disabled: it is never allocated until enabled")
	return cmd
}

func newHubListCmd(o *clientOptions) *cobra.Command {
	return listCmd(o, "List the hubs: the built-in hub first, then the registered ones", (*apiclient.Client).ListHubs, func(w io.Writer, items []api.HubInfo) {
		row(w, "NAME", "WEIGHT", "REGION", "STATUS", "BUILTIN", "VERSION")
		for _, h := range items {
			version := strconv.FormatInt(h.Version, 10)
			builtin := "no"
			if h.Builtin {
				version, builtin = "-", "yes"
			}
			row(w, h.Name, strconv.Itoa(h.Weight), orDash(h.Region), hubStatus(h.Enabled), builtin, version)
		}
	})
}

func newHubShowCmd(o *clientOptions) *cobra.Command {
	return showCmd(o, "show NAME", "Show a hub (the built-in hub too)", (*apiclient.Client).GetHub, hubFields)
}

func newHubUpdateCmd(o *clientOptions) *cobra.Command {
	var (
		weight          int
		region          string
		enable, disable bool
		ifVersion       int64
	)
	cmd := &cobra.Command{
		Use:   "update NAME [--weight N] [--region R] [--enable | --disable] [--if-version V]",
		Short: "Change a registered hub's weight, region or status",
		Long: "Change the fields given by flags; the others stay as they are. --region '' removes the region.\n" +
			"With --if-version, the change is refused if the hub was written since that version.\n" +
			"The built-in hub is changed by the server's configuration (--hub-name, --hub-region), not here.",
		Example: "  zerotouch hub update hub-eu.example.com:8883 --weight 0\n" +
			"  zerotouch hub update hub-us.example.com --enable --region us-east-2",
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			var req api.UpdateHubRequest
			f := cmd.Flags()
			if enable && disable {
				return usageError(cmd, errors.New("choose --enable or --disable, not both"))
			}
			if f.Changed("weight") {
				req.Weight = &weight
			}
			if f.Changed("region") {
				req.Region = &region
			}
			if enable || disable {
				req.Enabled = &enable
			}
			if f.Changed("if-version") {
				req.Version = &ifVersion
			}
			if req.Weight == nil && req.Region == nil && req.Enabled == nil {
				return usageError(cmd, errors.New("nothing to change: give --weight, --region, --enable or --disable"))
			}
			h, err := c.UpdateHub(ctx, args[0], req)
			if err != nil {
				return err
			}
			return o.print(cmd, h, func(w io.Writer) { hubFields(w, &api.HubInfo{Hub: *h}) })
		}),
	}
	f := cmd.Flags()
	f.IntVar(&weight, "weight", 0, "share of new devices under the hashed policy (0: takes no new devices)")
	f.StringVar(&region, "region", "", "where the hub is, for the geoLatency policy ('' removes it)")
	f.BoolVar(&enable, "enable", false, "enable the hub: it can be allocated")
	f.BoolVar(&disable, "disable", false, "disable the hub: it is never allocated (devices on it stay)")
	f.Int64Var(&ifVersion, "if-version", 0, "apply only if the hub is still at this version")
	return cmd
}

func newHubRemoveCmd(o *clientOptions) *cobra.Command {
	cmd := o.deleteCmd("hub", "Unlink a registered hub (devices assigned to it stay assigned)", (*apiclient.Client).DeleteHub)
	cmd.Use = "remove NAME"
	cmd.Aliases = []string{"delete", "rm"}
	return cmd
}

func hubStatus(enabled bool) string {
	if enabled {
		return "enabled"
	}
	return "disabled"
}

func hubFields(w io.Writer, h *api.HubInfo) {
	kv := []string{
		"Name", h.Name,
		"Weight", strconv.Itoa(h.Weight),
		"Region", h.Region,
		"Status", hubStatus(h.Enabled),
	}
	if h.Builtin {
		kv = append(kv, "Built-in", "yes: this server's own hub (--hub-name, --hub-region)")
	} else {
		kv = append(kv,
			"Version", strconv.FormatInt(h.Version, 10),
			"Created", fmtTime(h.CreatedAt),
			"Updated", fmtTime(h.UpdatedAt))
	}
	fields(w, kv...)
}
