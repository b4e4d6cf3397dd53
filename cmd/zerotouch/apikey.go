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

func newAPIKeyCmd(o *clientOptions) *cobra.Command {
	var role string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an API key and print it once",
		Long: "Create an API key. Roles: viewer reads; oem also enables and disables devices; operator also\n" +
			"changes profiles, devices and credentials; admin also manages API keys. The key is printed only once.",
		Example: "  zerotouch apikey create ci --role operator -o json",
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if role == "" {
				return usageError(cmd, errors.New("--role is required (admin, operator, oem or viewer)"))
			}
			k, err := c.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: args[0], Role: role})
			if err != nil {
				return err
			}
			if o.output == outputTable {
				cmd.PrintErrln("the key is shown only this once: keep it now")
			}
			return o.print(cmd, k, func(w io.Writer) {
				fields(w, "ID", k.ID, "Name", k.Name, "Role", k.Role, "Key", k.Key, "Created", fmtTime(k.CreatedAt))
			})
		}),
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator, oem or viewer (required)")

	return newGroupCmd("apikey", "Manage management API keys (admin only)",
		create,
		&cobra.Command{
			Use:   "list",
			Short: "List API keys (not the keys themselves)",
			Args:  exactArgs(0),
			RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
				ks, err := c.ListAPIKeys(ctx)
				if err != nil {
					return err
				}
				return o.print(cmd, api.List[registry.APIKey]{Items: ks}, func(w io.Writer) {
					row(w, "ID", "NAME", "ROLE", "CREATED")
					for _, k := range ks {
						row(w, k.ID, k.Name, k.Role, fmtTime(k.CreatedAt))
					}
				})
			}),
		},
		o.deleteCmd("API key", "Delete an API key", (*apiclient.Client).DeleteAPIKey),
	)
}
