package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
)

func newProfileCmd(o *clientOptions) *cobra.Command {
	return newGroupCmd("profile", "Manage device profiles (provisioning rules, key and secret)",
		newProfileCreateCmd(o),
		newProfileListCmd(o),
		&cobra.Command{
			Use:   "get ID",
			Short: "Show a device profile",
			Args:  exactArgs(1),
			RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
				p, err := c.GetProfile(ctx, args[0])
				if err != nil {
					return err
				}
				return o.print(cmd, p, func(w io.Writer) { profileFields(w, p, "") })
			}),
		},
		newProfileUpdateCmd(o),
		o.deleteCmd("profile", "Delete a device profile that no device uses", (*apiclient.Client).DeleteProfile),
		&cobra.Command{
			Use:   "rotate-secret ID",
			Short: "Replace a profile's provision secret with a new one, printed once",
			Long: "Replace a profile's provision secret with a generated one and print it. It is shown only this once;\n" +
				"devices holding the old secret can no longer provision.",
			Args: exactArgs(1),
			RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
				p, err := c.RotateProfileSecret(ctx, args[0])
				if err != nil {
					return err
				}
				return o.printWithSecret(cmd, p)
			}),
		},
	)
}

func newProfileCreateCmd(o *clientOptions) *cobra.Command {
	var req api.CreateProfileRequest
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a device profile and print its provision key and secret",
		Long: "Create a device profile. Its provision key and secret are generated unless given with --key and\n" +
			"--secret; the secret is printed only this once.",
		Example: "  zerotouch profile create sensors --strategy allow-create -o json",
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if req.Strategy == "" {
				return usageError(cmd, errors.New("--strategy is required (allow-create, pre-provisioned or disabled)"))
			}
			req.Name = args[0]
			p, err := c.CreateProfile(ctx, req)
			if err != nil {
				return err
			}
			return o.printWithSecret(cmd, p)
		}),
	}
	f := cmd.Flags()
	f.StringVar((*string)(&req.Strategy), "strategy", "", "provisioning strategy: allow-create, pre-provisioned or disabled (required)")
	f.StringVar((*string)(&req.DefaultCredentialsType), "credentials-type", string(registry.CredentialAccessToken), "credentials the server issues: ACCESS_TOKEN or MQTT_BASIC")
	f.StringVar((*string)(&req.ReprovisionPolicy), "reprovision", string(registry.ReprovisionNever), "second request for a provisioned device: never (refuse) or rotate (new credentials)")
	f.StringVar(&req.Description, "description", "", "free text for operators")
	f.StringVar(&req.ProvisionDeviceKey, "key", "", "provision key (generated when empty)")
	f.StringVar(&req.ProvisionDeviceSecret, "secret", "", "provision secret (generated when empty)")
	return cmd
}

func newProfileListCmd(o *clientOptions) *cobra.Command {
	return listCmd(o, "List device profiles", (*apiclient.Client).ListProfiles, func(w io.Writer, items []registry.Profile) {
		row(w, "ID", "NAME", "STRATEGY", "CREDENTIALS", "REPROVISION", "PROVISION KEY")
		for _, p := range items {
			row(w, p.ID, p.Name, string(p.Strategy), string(p.DefaultCredentialType), string(p.ReprovisionPolicy), p.ProvisionKey)
		}
	})
}

func newProfileUpdateCmd(o *clientOptions) *cobra.Command {
	var name, desc, strategy, credType, reprovision, key, sec string
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change some fields of a device profile",
		Args:  exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			var req api.UpdateProfileRequest
			f := cmd.Flags()
			// Only flags given on the command line are sent: the rest stay as they are.
			set := func(flag string, dst **string, v *string) {
				if f.Changed(flag) {
					*dst = v
				}
			}
			set("name", &req.Name, &name)
			set("description", &req.Description, &desc)
			set("key", &req.ProvisionDeviceKey, &key)
			set("secret", &req.ProvisionDeviceSecret, &sec)
			if f.Changed("strategy") {
				req.Strategy = (*registry.Strategy)(&strategy)
			}
			if f.Changed("credentials-type") {
				req.DefaultCredentialsType = (*registry.CredentialType)(&credType)
			}
			if f.Changed("reprovision") {
				req.ReprovisionPolicy = (*registry.ReprovisionPolicy)(&reprovision)
			}
			if req == (api.UpdateProfileRequest{}) {
				return usageError(cmd, errors.New("nothing to change: give at least one flag"))
			}
			p, err := c.UpdateProfile(ctx, args[0], req)
			if err != nil {
				return err
			}
			return o.print(cmd, p, func(w io.Writer) { profileFields(w, p, "") })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "new name")
	f.StringVar(&desc, "description", "", "new description")
	f.StringVar(&strategy, "strategy", "", "allow-create, pre-provisioned or disabled")
	f.StringVar(&credType, "credentials-type", "", "ACCESS_TOKEN or MQTT_BASIC")
	f.StringVar(&reprovision, "reprovision", "", "never or rotate")
	f.StringVar(&key, "key", "", "new provision key")
	f.StringVar(&sec, "secret", "", "new provision secret (see also rotate-secret)")
	return cmd
}

// printWithSecret prints a profile with its provision secret, shown once.
func (o *clientOptions) printWithSecret(cmd *cobra.Command, p *api.ProfileWithSecret) error {
	if o.output == outputTable {
		cmd.PrintErrln("the provision secret is shown only this once: keep it now")
	}
	return o.print(cmd, p, func(w io.Writer) { profileFields(w, &p.Profile, p.ProvisionDeviceSecret) })
}

func profileFields(w io.Writer, p *registry.Profile, secret string) {
	fields(w,
		"ID", p.ID,
		"Name", p.Name,
		"Description", p.Description,
		"Strategy", string(p.Strategy),
		"Credentials type", string(p.DefaultCredentialType),
		"Reprovision policy", string(p.ReprovisionPolicy),
		"Provision key", p.ProvisionKey,
		"Provision secret", secret,
		"Created", fmtTime(p.CreatedAt),
		"Updated", fmtTime(p.UpdatedAt),
	)
}

// pageFlags adds the paging flags of a list command.
func pageFlags(cmd *cobra.Command, limit *int, after *string, all *bool) {
	f := cmd.Flags()
	f.IntVar(limit, "limit", 0, "page size (server default 100, at most 1000)")
	f.StringVar(after, "after", "", "cursor: the next value printed by the previous page")
	f.BoolVar(all, "all", false, "fetch every page")
}

// collect fetches one page, or with all every page from after on, as one list.
func collect[T any](all bool, after string, page func(after string) (*api.List[T], error)) (*api.List[T], error) {
	out := &api.List[T]{Items: []T{}}
	for {
		p, err := page(after)
		if err != nil {
			return nil, err
		}
		out.Items, out.Next = append(out.Items, p.Items...), p.Next
		if !all || p.Next == "" {
			return out, nil
		}
		after = p.Next
	}
}

// printList prints a page and, in a table, how to get the next one.
func printList[T any](o *clientOptions, cmd *cobra.Command, l *api.List[T], cursorFlag string, table func(w io.Writer)) error {
	if err := o.print(cmd, l, table); err != nil {
		return err
	}
	if o.output == outputTable && l.Next != "" {
		cmd.PrintErrf("more results: repeat with --%s %s\n", cursorFlag, l.Next)
	}
	return nil
}

// listCmd is "list" for one kind of record, paged with --limit, --after and
// --all, so that every kind lists, pages and prints its cursor alike:
// fetch is the client call, table writes the heading and the rows.
func listCmd[T any](o *clientOptions, short string, fetch func(*apiclient.Client, context.Context, int, string) (*api.List[T], error),
	table func(w io.Writer, items []T)) *cobra.Command {
	var (
		limit int
		after string
		all   bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: short,
		Args:  exactArgs(0),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			page, err := collect(all, after, func(after string) (*api.List[T], error) {
				return fetch(c, ctx, limit, after)
			})
			if err != nil {
				return err
			}
			return printList(o, cmd, page, "after", func(w io.Writer) { table(w, page.Items) })
		}),
	}
	pageFlags(cmd, &limit, &after, &all)
	return cmd
}

// showCmd is "show ID" (alias get) for one kind of record, so that every
// kind reads and prints one record alike: get is the client call, table
// writes its fields.
func showCmd[T any](o *clientOptions, use, short string, get func(*apiclient.Client, context.Context, string) (*T, error),
	table func(w io.Writer, v *T)) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Aliases: []string{"get"},
		Short:   short,
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			v, err := get(c, ctx, args[0])
			if err != nil {
				return err
			}
			return o.print(cmd, v, func(w io.Writer) { table(w, v) })
		}),
	}
}
