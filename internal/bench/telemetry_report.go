package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// WriteJSON writes r as indented JSON.
func (r *TelemetryReport) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteText writes r for people.
func (r *TelemetryReport) WriteText(w io.Writer) error {
	var b strings.Builder
	rate := fmt.Sprintf("%g messages/s in total (%.3g per device)", r.Rate, r.Rate/float64(max(r.Devices, 1)))
	if r.Rate == 0 {
		rate = "no messages (idle sessions)"
	}
	fmt.Fprintf(&b, "telemetry: %d devices against %s, %s at QoS %d", r.Devices, r.Target, rate, r.QoS)
	if r.QoS == 1 {
		fmt.Fprintf(&b, ", window %d", r.Window)
	}
	src := "the system's choice"
	if r.Sources > 0 {
		src = fmt.Sprintf("127.0.0.2–127.0.0.%d", r.Sources+1)
	}
	fmt.Fprintf(&b, "\n           %d values of 100-byte messages; source addresses: %s\n", r.ValuesPerMessage, src)
	fmt.Fprintf(&b, "devices:   %d provisioned in %.2f s, %d connected in %.2f s\n", r.Provisioned, r.ProvisionSeconds, r.Connected, r.ConnectSeconds)
	fmt.Fprintf(&b, "sent:      %d messages (%d values) in %.2f s: %.0f msgs/s\n", r.Sent, r.SentValues, r.LoadSeconds, r.SentPerSecond)
	if r.QoS == 1 {
		fmt.Fprintf(&b, "acked:     %d messages (%d values), %d unacknowledged\n", r.Acked, r.AckedValues, r.Sent-r.Acked)
	}
	if s := r.Server; s != nil {
		if s.Error != "" {
			fmt.Fprintf(&b, "server:    figures incomplete: %s\n", s.Error)
		}
		fmt.Fprintf(&b, "stored:    %.0f messages, %.0f values, committed %.2f s after the first publish: %.0f values/s (%.0f msgs/s)\n",
			s.StoredMessages, s.StoredValues, s.StoredSeconds, s.StoredValuesPerSecond, s.StoredValuesPerSecond/float64(max(r.ValuesPerMessage, 1)))
		if lost := float64(r.SentValues) - s.StoredValues; lost != 0 {
			fmt.Fprintf(&b, "           %.0f values sent and not stored\n", lost)
		}
		fmt.Fprintf(&b, "messages:  %s; %.0f waited for the store; %.0f commit failures; at most %.0f records pending\n",
			formatCounts(s.Messages), s.IngestWaits, s.CommitFailures, s.MaxPending)
		fmt.Fprintf(&b, "refused:   CONNECTs %s\n", formatCounts(s.RefusedConnections))
		fmt.Fprintf(&b, "memory:    server RSS %.1f MiB before connecting, %.1f MiB with %d connected (server counts %.0f), %.1f MiB after the load (Go heap in use %.1f MiB)\n",
			s.RSSBeforeMiB, s.RSSConnectedMiB, r.Connected, s.ConnectedDevices, s.RSSAfterLoadMiB, s.HeapAfterLoadMiB)
		fmt.Fprintf(&b, "           %.1f KiB per connection (Go heap %.1f, stacks %.1f)\n", s.KiBPerConnection, s.HeapKiBPerConnection, s.StackKiBPerConnection)
		fmt.Fprintf(&b, "CPU:       server %.1f s (%.0f%% of one core) over the load; bench %.1f s (%.0f%%) over the whole run\n",
			s.CPUSeconds, s.CPUPercent, r.BenchCPUSeconds, r.BenchCPUPercent)
	} else {
		fmt.Fprintf(&b, "CPU:       bench %.1f s (%.0f%% of one core)\n", r.BenchCPUSeconds, r.BenchCPUPercent)
	}
	if len(r.Errors) == 0 {
		b.WriteString("errors:    none\n")
	} else {
		b.WriteString("errors by kind:\n")
		kinds := slices.SortedFunc(maps.Keys(r.Errors), func(a, c Kind) int { return cmp.Compare(r.Errors[c], r.Errors[a]) })
		for _, k := range kinds {
			fmt.Fprintf(&b, "  %-17s %7d  e.g. %s\n", k, r.Errors[k], r.ErrorExamples[k])
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
