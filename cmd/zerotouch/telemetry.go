package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/config"

	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// newTelemetryCmd is "telemetry query" and "telemetry latest". The device
// is an argument of each subcommand, not of the group: as in every group,
// a word after "telemetry" is a subcommand, so a mistyped one is an error
// rather than taken for a device id.
func newTelemetryCmd(o *clientOptions) *cobra.Command {
	return newGroupCmd("telemetry", "Read what devices report: latest values, time ranges and aggregates",
		newTelemetryQueryCmd(o),
		newTelemetryLatestCmd(o),
	)
}

func newTelemetryQueryCmd(o *clientOptions) *cobra.Command {
	var (
		tq              apiclient.TelemetryQuery
		since, from, to string
		order, agg      string
		interval        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "query DEVICE_ID",
		Short: "Show a device's values over a time range, raw or aggregated",
		Long: `Show a device's time-series values over a time range: raw values (newest first,
at most --limit per key), or with --agg one aggregate per --interval.

The range defaults to the last 24 hours. --since starts it a duration ago (1h) or
at a time; --from and --to take an RFC 3339 time, Unix milliseconds, or a
duration ago. Without --keys, every key the device has reported is shown.

Aggregates: min, max, avg and sum use numeric values only; count counts every
value. Intervals without values are left out; COUNT is the values aggregated.`,
		Example: `  zerotouch telemetry query 6d199857-be94-4317-aef7-62ce9aa9f530 --keys temperature --since 1h
  zerotouch telemetry query DEVICE_ID --keys temperature,humidity --agg avg --interval 5m --since 6h
  zerotouch telemetry query DEVICE_ID --from 2025-01-02T00:00:00Z --to 2025-01-03T00:00:00Z --order asc --limit 1000
  zerotouch telemetry query DEVICE_ID --keys temperature -o json`,
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			now := time.Now()
			if since != "" && from != "" {
				return usageError(cmd, errors.New("give --since or --from, not both"))
			}
			if since != "" {
				if d, err := config.ParseDuration(since); err == nil && d > 0 {
					tq.Since = d
				} else {
					t, err := parseSince(since, now)
					if err != nil {
						return usageError(cmd, err)
					}
					tq.From = t
				}
			}
			var err error
			if tq.From, err = parseTimeFlag("from", from, now, tq.From); err != nil {
				return usageError(cmd, err)
			}
			if tq.To, err = parseTimeFlag("to", to, now, time.Time{}); err != nil {
				return usageError(cmd, err)
			}
			switch order {
			case "", "asc", "desc":
				tq.Order = order
			default:
				return usageError(cmd, fmt.Errorf("--order %q: want asc or desc", order))
			}
			intervalExplicit := cmd.Flags().Changed("interval")
			switch {
			case agg == "" && intervalExplicit:
				return usageError(cmd, errors.New("--interval needs --agg (min, max, avg, sum or count)"))
			case agg != "":
				a, err := telemetry.ParseAggregation(agg)
				if err != nil {
					return usageError(cmd, fmt.Errorf("--agg: %w", err))
				}
				if !intervalExplicit {
					return usageError(cmd, fmt.Errorf("--agg %s needs --interval, such as --interval 5m", agg))
				}
				if tq.Limit != 0 || order != "" {
					return usageError(cmd, errors.New("--limit and --order apply to raw values, not with --agg"))
				}
				tq.Aggregation, tq.Interval = string(a), interval
			}
			series, err := c.QueryTelemetry(ctx, args[0], tq)
			if err != nil {
				return err
			}
			n := 0
			for _, s := range series {
				n += len(s.Values)
			}
			if n == 0 && o.output == outputTable {
				cmd.PrintErrln("no values in the time range")
			}
			return o.print(cmd, api.TelemetrySeries{Series: series}, func(w io.Writer) {
				if agg == "" {
					row(w, "KEY", "TIME", "VALUE")
				} else {
					row(w, "KEY", "TIME", "VALUE", "COUNT")
				}
				for _, s := range series {
					for _, v := range s.Values {
						if agg == "" {
							row(w, s.Key, fmtMillis(v.TS), valueText(v.Value))
						} else {
							row(w, s.Key, fmtMillis(v.TS), valueText(v.Value), strconv.FormatInt(v.Count, 10))
						}
					}
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringSliceVar(&tq.Keys, "keys", nil, "keys to show, comma-separated (default: every key the device reported)")
	f.StringVar(&since, "since", "", "start a duration ago (1h, 30m, 7d) or at an RFC 3339 time")
	f.StringVar(&from, "from", "", "start of the range: RFC 3339 time, Unix milliseconds, or a duration ago")
	f.StringVar(&to, "to", "", "end of the range (exclusive; default now): RFC 3339 time, Unix milliseconds, or a duration ago")
	f.IntVar(&tq.Limit, "limit", 0, "raw values per key (server default 100, at most 10000)")
	f.StringVar(&order, "order", "", "order of raw values: desc (newest first, the default) or asc")
	f.StringVar(&agg, "agg", "", "aggregate: min, max, avg, sum or count (needs --interval)")
	f.DurationVar(&interval, "interval", 0, "aggregation interval, such as 5m or 1h")
	return cmd
}

func newTelemetryLatestCmd(o *clientOptions) *cobra.Command {
	var keys []string
	cmd := &cobra.Command{
		Use:   "latest DEVICE_ID",
		Short: "Show the latest value of each of a device's keys",
		Example: `  zerotouch telemetry latest 6d199857-be94-4317-aef7-62ce9aa9f530
  zerotouch telemetry latest DEVICE_ID --keys temperature,humidity -o json`,
		Args: exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			vals, err := c.LatestTelemetry(ctx, args[0], keys)
			if err != nil {
				return err
			}
			if vals == nil {
				vals = []api.LatestValue{}
			}
			return o.print(cmd, api.LatestValues{Values: vals}, func(w io.Writer) {
				row(w, "KEY", "TIME", "TYPE", "VALUE")
				for _, v := range vals {
					row(w, v.Key, fmtMillis(v.TS), v.Type, valueText(v.Value))
				}
			})
		}),
	}
	cmd.Flags().StringSliceVar(&keys, "keys", nil, "keys to show, comma-separated (default: all)")
	return cmd
}

// parseTimeFlag reads --from or --to: Unix milliseconds, an RFC 3339 time,
// or a duration back from now. An empty flag gives def.
func parseTimeFlag(name, s string, now, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time such as 2025-01-02T15:04:05Z, Unix milliseconds, or a duration ago such as 2h", name, s)
	}
	return t, nil
}

// fmtMillis shows a value's time in local time, to the millisecond
// (devices often report several values a second).
func fmtMillis(ms int64) string {
	return time.UnixMilli(ms).Local().Format("2006-01-02T15:04:05.000Z07:00")
}

// valueText shows a value in a table cell: a string as it is, anything
// else as its JSON.
func valueText(v telemetry.Value) string {
	if v.Kind == telemetry.KindString {
		return v.Text
	}
	b, err := v.MarshalJSON()
	if err != nil {
		return "?"
	}
	if v.Kind == telemetry.KindDouble && !strings.ContainsAny(string(b), ".eE") {
		// A whole double reads 42.0, told apart from the long 42.
		return string(b) + ".0"
	}
	return string(b)
}
