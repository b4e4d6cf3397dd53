package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/zerotouch/zerotouch/internal/config"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/apiclient"
)

// Output formats of -o/--output.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// usageError makes err exit with exitUsage.
func usageError(cmd *cobra.Command, err error) error {
	return &exitError{code: exitUsage, err: fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())}
}

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError(cmd, err)
		}
		return nil
	}
}

// newGroupCmd returns a command that only holds subcommands: alone it
// prints its help; with an unknown subcommand it is a usage error.
// deleteCmd is "delete ID" for one kind of record: del is the client call,
// what names the record in the confirmation printed on stderr.
func (o *clientOptions) deleteCmd(what, short string, del func(*apiclient.Client, context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: short,
		Args:  exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if err := del(c, ctx, args[0]); err != nil {
				return err
			}
			cmd.PrintErrf("deleted %s %s\n", what, args[0])
			return nil
		}),
	}
}

func newGroupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError(cmd, fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath()))
			}
			return cmd.Help()
		},
	}
	c.AddCommand(subs...)
	return c
}

// call is the body of a command that talks to the API.
type call func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error

// run checks the persistent flags, builds the client and runs fn, turning
// a connection failure into advice.
func (o *clientOptions) run(fn call) func(*cobra.Command, []string) error {
	return o.runWith(true, fn)
}

// runPublic is run for commands that call only the server's public routes
// (the CA chain, the CRL): no API key is needed.
func (o *clientOptions) runPublic(fn call) func(*cobra.Command, []string) error {
	return o.runWith(false, fn)
}

// checkOutput refuses an unknown -o value.
func (o *clientOptions) checkOutput(cmd *cobra.Command) error {
	if o.output != outputTable && o.output != outputJSON {
		return usageError(cmd, fmt.Errorf("unknown output format %q (want table or json)", o.output))
	}
	return nil
}

func (o *clientOptions) runWith(needKey bool, fn call) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := o.checkOutput(cmd); err != nil {
			return err
		}
		if needKey && o.key() == "" {
			return usageError(cmd, errors.New("no API key: set --api-key or ZEROTOUCH_API_KEY"))
		}
		c, err := apiclient.New(o.server, o.key())
		if err != nil {
			return usageError(cmd, err)
		}
		err = fn(cmd.Context(), cmd, args, c)
		if errors.Is(err, apiclient.ErrUnreachable) {
			return fmt.Errorf("cannot reach the server (is `zerotouch serve` running at %s?): %w", c.BaseURL(), err)
		}
		return err
	}
}

// print writes v to stdout as JSON with -o json, otherwise as the table
// that table writes (columns separated by tabs, lines ended by \n).
func (o *clientOptions) print(cmd *cobra.Command, v any, table func(w io.Writer)) error {
	out := cmd.OutOrStdout()
	if o.output == outputJSON {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding output: %w", err)
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// row writes one table line. Values come from devices and API clients:
// control characters are escaped, since a tab or newline would break the
// columns and an escape sequence could rewrite the operator's terminal.
func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		cells[i] = printable(c)
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// printable replaces control characters and invalid UTF-8 by Go escapes
// (\x1b, \u0085, \xff), leaving everything else as it is.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// fields writes a record as NAME<tab>value lines, skipping empty values.
func fields(w io.Writer, kv ...string) {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			row(w, kv[i]+":", kv[i+1])
		}
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return fmtTime(*t)
}

// orDash keeps empty cells visible in a table.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// profileRef splits a NAME_OR_ID argument: a UUID is an id, anything else
// a name (profile ids are UUIDs).
func profileRef(s string) (id, name string) {
	if _, err := uuid.Parse(s); err == nil {
		return s, ""
	}
	return "", s
}

// parseSince reads --since: a duration back from now (1h, 30m) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := config.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: the duration must be positive", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want a duration such as 1h or 7d, or an RFC 3339 time such as 2025-01-02T15:04:05Z", s)
	}
	return t, nil
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
