package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/apiclient"
)

func newAuditCmd(o *clientOptions) *cobra.Command {
	var (
		f     apiclient.AuditFilter
		since string
	)
	list := &cobra.Command{
		Use:     "list",
		Short:   "List audit events, newest first",
		Example: "  zerotouch audit list --action provision --since 1h",
		Args:    exactArgs(0),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usageError(cmd, err)
				}
				f.Since = t
			}
			page, err := c.ListAudit(ctx, f)
			if err != nil {
				return err
			}
			return printList(o, cmd, page, "before", func(w io.Writer) {
				row(w, "TIME", "ACTOR", "ACTION", "RESULT", "DEVICE", "SOURCE", "DETAIL")
				for _, e := range page.Items {
					row(w, fmtTime(e.Time), e.Actor, e.Action, e.Result, orDash(e.DeviceID), orDash(e.Source), e.Detail)
				}
			})
		}),
	}
	fl := list.Flags()
	fl.StringVar(&f.DeviceID, "device", "", "only events about this device id")
	fl.StringVar(&f.Action, "action", "", "only this action (e.g. provision, device.disable)")
	fl.StringVar(&f.Result, "result", "", "only this result (success or a failure reason)")
	fl.StringVar(&since, "since", "", "only events since a duration ago (1h) or an RFC 3339 time")
	fl.StringVar(&f.Before, "before", "", "cursor: the next value printed by the previous page")
	fl.IntVar(&f.Limit, "limit", 0, "page size (server default 100, at most 1000)")
	return newGroupCmd("audit", "Read the audit trail", list)
}
