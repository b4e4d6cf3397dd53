package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

func newAttributesCmd(o *clientOptions) *cobra.Command {
	c := newGroupCmd("attributes", "Read and write device attributes (client, shared and server scopes)",
		newAttributesGetCmd(o),
		newAttributesSetCmd(o),
		newAttributesDeleteCmd(o),
	)
	c.Aliases = []string{"attribute", "attr"}
	c.Long = `Read and write device attributes. Each attribute has a scope:

  client  reported by the device (read-only here)
  shared  set here and sent to the device at once (e.g. a target firmware version)
  server  set here and kept on the server; the device never sees it`
	return c
}

// writeScopeFlag adds the --scope of set and delete.
func writeScopeFlag(cmd *cobra.Command, scope *string) {
	cmd.Flags().StringVar(scope, "scope", "", "shared (sent to the device) or server (kept on the server); required")
}

// writeScope checks --scope of set and delete.
func writeScope(cmd *cobra.Command, s string) (telemetry.Scope, error) {
	switch s {
	case "":
		return "", usageError(cmd, errors.New("--scope is required: shared (sent to the device) or server (kept on the server)"))
	case string(telemetry.ScopeShared), string(telemetry.ScopeServer):
		return telemetry.Scope(s), nil
	case string(telemetry.ScopeClient):
		return "", usageError(cmd, errors.New("--scope client: client attributes are reported by the device and cannot be written; use shared or server"))
	}
	return "", usageError(cmd, fmt.Errorf("--scope %q: want shared or server", s))
}

func newAttributesGetCmd(o *clientOptions) *cobra.Command {
	var (
		scope string
		keys  []string
	)
	cmd := &cobra.Command{
		Use:   "get DEVICE_ID",
		Short: "Show a device's attributes",
		Example: `  zerotouch attributes get 6d199857-be94-4317-aef7-62ce9aa9f530
  zerotouch attributes get DEVICE_ID --scope shared --keys fw,interval -o json`,
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			var sc telemetry.Scope
			if scope != "" {
				var err error
				if sc, err = telemetry.ParseScope(scope); err != nil {
					return usageError(cmd, fmt.Errorf("--scope: %w", err))
				}
			}
			attrs, err := c.Attributes(ctx, args[0], sc, keys)
			if err != nil {
				return err
			}
			if attrs == nil {
				attrs = []api.AttributeValue{}
			}
			return o.print(cmd, api.Attributes{Attributes: attrs}, func(w io.Writer) {
				row(w, "SCOPE", "KEY", "TYPE", "VALUE", "UPDATED")
				for _, a := range attrs {
					row(w, string(a.Scope), a.Key, a.Type, valueText(a.Value), fmtTime(a.UpdatedAt))
				}
			})
		}),
	}
	cmd.Flags().StringVar(&scope, "scope", "", "only this scope: client, shared or server (default: all three)")
	cmd.Flags().StringSliceVar(&keys, "keys", nil, "only these keys, comma-separated")
	return cmd
}

func newAttributesSetCmd(o *clientOptions) *cobra.Command {
	var (
		scope     string
		object    string
		asStrings bool
	)
	cmd := &cobra.Command{
		Use:   "set DEVICE_ID KEY=VALUE...",
		Short: "Set shared or server attributes of a device",
		Long: `Set shared or server attributes of a device; other attributes are kept. Shared
attributes are sent at once to the device's live sessions.

Each VALUE is read as JSON when it is valid JSON, else taken as a string:

  interval=30          the number 30 (a long)
  ratio=0.5            the number 0.5 (a double)
  fw=1.2               the number 1.2, NOT the string "1.2"
  fw='"1.2"'           the string "1.2" (the shell keeps the double quotes)
  fw=1.2.0             the string "1.2.0" (not valid JSON)
  led=true             the boolean true
  'location=hall 3'    the string "hall 3"
  config='{"a":1}'     a JSON object

--strings takes every VALUE as a string, never as JSON (fw=1.2 is then "1.2").
--json gives the attributes as one JSON object instead (or as well; KEY=VALUE
arguments win). null is not a value: delete an attribute instead.`,
		Example: `  zerotouch attributes set 6d199857-be94-4317-aef7-62ce9aa9f530 --scope shared interval=30 led=true
  zerotouch attributes set DEVICE_ID --scope shared --strings fw=1.2
  zerotouch attributes set DEVICE_ID --scope server --json '{"site": "hall 3", "rack": 12}'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usageError(cmd, errors.New("requires DEVICE_ID and at least one KEY=VALUE (or --json)"))
			}
			return nil
		},
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			sc, err := writeScope(cmd, scope)
			if err != nil {
				return err
			}
			values, err := attributeValues(object, args[1:], asStrings)
			if err != nil {
				return usageError(cmd, err)
			}
			pushed, err := c.SetAttributes(ctx, args[0], sc, values)
			if err != nil {
				return err
			}
			return o.print(cmd, api.AttributesSet{Pushed: pushed}, func(w io.Writer) {
				fmt.Fprintf(w, "set %d %s attributes (%s)", len(values), sc, joinSorted(slices.Collect(maps.Keys(values))))
				if sc == telemetry.ScopeShared {
					fmt.Fprintf(w, "; sent to %d live %s", pushed, plural(pushed, "session", "sessions"))
				}
				fmt.Fprintln(w)
			})
		}),
	}
	writeScopeFlag(cmd, &scope)
	cmd.Flags().StringVar(&object, "json", "", "the attributes as a JSON object, such as '{\"fw\": \"1.2\"}'")
	cmd.Flags().BoolVar(&asStrings, "strings", false, "take every VALUE as a string, never as JSON")
	return cmd
}

// attributeValues builds the body of attributes set from --json and the
// KEY=VALUE arguments (see the command's help for the rule).
func attributeValues(object string, pairs []string, asStrings bool) (map[string]json.RawMessage, error) {
	values := map[string]json.RawMessage{}
	if object != "" {
		if err := json.Unmarshal([]byte(object), &values); err != nil || values == nil {
			return nil, fmt.Errorf("--json: want a JSON object such as '{\"fw\": \"1.2\"}'")
		}
		for k, v := range values {
			if string(v) == "null" {
				return nil, fmt.Errorf("--json: %q is null, which is not a value (delete the attribute instead)", k)
			}
		}
	}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want KEY=VALUE", p)
		}
		switch t := strings.TrimSpace(v); {
		case asStrings || !json.Valid([]byte(t)):
			values[k], _ = json.Marshal(v)
		case t == "null":
			return nil, fmt.Errorf("%s=null: null is not a value; for the string write %s='\"null\"' or use --strings", k, k)
		default:
			values[k] = json.RawMessage(t)
		}
	}
	if len(values) == 0 {
		return nil, errors.New("no attributes: give KEY=VALUE arguments or --json")
	}
	return values, nil
}

func newAttributesDeleteCmd(o *clientOptions) *cobra.Command {
	var scope string
	cmd := &cobra.Command{
		Use:     "delete DEVICE_ID KEY...",
		Short:   "Delete shared or server attributes of a device",
		Example: `  zerotouch attributes delete 6d199857-be94-4317-aef7-62ce9aa9f530 --scope shared fw interval`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageError(cmd, errors.New("requires DEVICE_ID and at least one KEY"))
			}
			return nil
		},
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			sc, err := writeScope(cmd, scope)
			if err != nil {
				return err
			}
			deleted, err := c.DeleteAttributes(ctx, args[0], sc, args[1:])
			if err != nil {
				return err
			}
			if deleted == nil {
				deleted = []string{}
			}
			return o.print(cmd, api.AttributesDeleted{Deleted: deleted}, func(w io.Writer) {
				if len(deleted) == 0 {
					fmt.Fprintf(w, "no %s attribute was deleted: none of the keys exists\n", sc)
					return
				}
				fmt.Fprintf(w, "deleted %d %s attributes (%s)\n", len(deleted), sc, joinSorted(deleted))
			})
		}),
	}
	writeScopeFlag(cmd, &scope)
	return cmd
}

func joinSorted(keys []string) string {
	return strings.Join(slices.Sorted(slices.Values(keys)), ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
