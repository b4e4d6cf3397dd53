package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a storm. Durations are in milliseconds (JSON
// numbers) unless named otherwise. Succeeded + Failed = Devices, and the
// counts in Errors add up to Failed.
type Report struct {
	Dialect     string  `json:"dialect"`
	Credentials string  `json:"credentials"`
	Target      string  `json:"target"`
	Devices     int     `json:"devices"`
	Concurrency int     `json:"concurrency,omitempty"` // devices in flight (without a rate), or their cap
	Rate        float64 `json:"rate,omitempty"`        // arrivals per second
	RampSeconds float64 `json:"rampSeconds,omitempty"`
	Sources     int     `json:"sources"` // source addresses used (0: the system's choice)
	Kept        bool    `json:"keptConnected,omitempty"`

	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// DurationSeconds runs from the first device's start to the last
	// one's end; DevicesPerSecond is Succeeded over it.
	DurationSeconds  float64 `json:"durationSeconds"`
	DevicesPerSecond float64 `json:"devicesPerSecond"`

	// BenchCPUSeconds is the CPU time the bench itself used (where the
	// system tells), and BenchCPUPercent that over the storm (100 = one
	// core): on one machine, the server's share is what is left.
	BenchCPUSeconds float64 `json:"benchCpuSeconds"`
	BenchCPUPercent float64 `json:"benchCpuPercent"`
	// CredentialsSeconds is how long making the devices' keys and
	// certificates took (x509 credentials), before the storm: it is in
	// neither DurationSeconds, the latencies nor BenchCPUSeconds.
	CredentialsSeconds float64 `json:"credentialsSeconds,omitempty"`

	// DPSPoll says, for the azure-dps dialect, when devices polled their
	// registration: "retry-after" (after waiting what the server said
	// with "assigning"), or "at once" (Config.DPSPollNow);
	// DPSRetryAfterSeconds is the longest retry-after the server gave.
	DPSPoll              string  `json:"dpsPoll,omitempty"`
	DPSRetryAfterSeconds float64 `json:"dpsRetryAfterSeconds,omitempty"`

	// Latency has one row per phase of the dialect's exchange, then (for
	// ThingsBoard) the provisioning span, and the whole exchange, over the
	// devices that completed it.
	Latency []PhaseLatency `json:"latency"`
	// Errors counts failed devices by kind; ErrorExamples holds the first
	// error of each kind.
	Errors        map[Kind]int    `json:"errors"`
	ErrorExamples map[Kind]string `json:"errorExamples,omitempty"`
	// Timeline has one entry per second of the run.
	Timeline []Second `json:"timeline"`
	// Server holds the server's figures from /metrics, when read.
	Server *ServerFigures `json:"server,omitempty"`
}

// PhaseLatency is the latency distribution of one phase.
type PhaseLatency struct {
	Phase Phase   `json:"phase"`
	Count int     `json:"count"`
	P50   float64 `json:"p50Ms"`
	P90   float64 `json:"p90Ms"`
	P99   float64 `json:"p99Ms"`
	Max   float64 `json:"maxMs"`
}

// Second is one second of the run: the devices that ended in it and the
// p99 latency of those that succeeded. For a dialect whose exchange is all
// provisioning (azure-dps, until its devices go on to their hub), the
// provisioning p99 is the whole exchange's.
type Second struct {
	Second            int     `json:"second"`
	Completed         int     `json:"completed"`
	Failed            int     `json:"failed"`
	P99ProvisioningMs float64 `json:"p99ProvisioningMs"`
	P99TotalMs        float64 `json:"p99TotalMs"`
}

// OK reports whether every device succeeded.
func (r *Report) OK() bool { return r.Failed == 0 && r.Succeeded == r.Devices }

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// quantile returns the q-quantile of sorted ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func latencyOf(p Phase, ds []time.Duration) PhaseLatency {
	slices.Sort(ds)
	pl := PhaseLatency{Phase: p, Count: len(ds)}
	if len(ds) > 0 {
		pl.P50, pl.P90, pl.P99, pl.Max = ms(quantile(ds, .5)), ms(quantile(ds, .9)), ms(quantile(ds, .99)), ms(ds[len(ds)-1])
	}
	return pl
}

// report sums the records.
func (s *storm) report(elapsed time.Duration) *Report {
	c := s.cfg
	fl := s.flow
	r := &Report{
		Dialect: c.Dialect, Credentials: c.Credentials, Target: s.addr, Devices: c.Devices,
		Concurrency: c.Concurrency, Rate: c.Rate, RampSeconds: c.Ramp.Seconds(), Sources: len(s.srcs), Kept: c.KeepConnected,
		Errors: map[Kind]int{}, ErrorExamples: map[Kind]string{},
	}
	if c.Dialect == DialectAzureDPS {
		r.DPSPoll = "retry-after"
		if c.DPSPollNow {
			r.DPSPoll = "at once"
		}
		r.DPSRetryAfterSeconds = float64(s.retryAfter.Load()) / 1000
	}
	per := make([][]time.Duration, len(fl.phases))
	var prov, total []time.Duration
	// spanOf sums the phases of the flow's span (0: none reached them all).
	spanOf := func(rec *record) time.Duration {
		var d time.Duration
		for _, x := range rec.lat[:fl.spanOf] {
			if x <= 0 {
				return 0
			}
			d += x
		}
		return d
	}
	var first, last time.Duration = -1, 0
	type bucket struct {
		ok, failed  int
		prov, total []time.Duration
	}
	var buckets []bucket
	for i := range s.recs {
		rec := &s.recs[i]
		for p, d := range rec.lat[:len(fl.phases)] {
			if d > 0 {
				per[p] = append(per[p], d)
			}
		}
		if d := spanOf(rec); fl.span != "" && d > 0 {
			prov = append(prov, d)
		}
		if rec.end > 0 {
			if first < 0 || rec.start < first {
				first = rec.start
			}
			last = max(last, rec.end)
			sec := int(rec.end / time.Second)
			for len(buckets) <= sec {
				buckets = append(buckets, bucket{})
			}
			b := &buckets[sec]
			if rec.err == nil {
				b.ok++
				if fl.span != "" {
					b.prov = append(b.prov, spanOf(rec))
				} else {
					b.prov = append(b.prov, rec.end-rec.start)
				}
				b.total = append(b.total, rec.end-rec.start)
			} else {
				b.failed++
			}
		}
		if rec.err != nil {
			r.Failed++
			r.Errors[rec.err.Kind]++
			if _, ok := r.ErrorExamples[rec.err.Kind]; !ok {
				r.ErrorExamples[rec.err.Kind] = rec.err.Error()
			}
			continue
		}
		r.Succeeded++
		total = append(total, rec.end-rec.start)
	}
	dur := elapsed
	if first >= 0 && last > first {
		dur = last - first
	}
	r.DurationSeconds = math.Round(dur.Seconds()*1000) / 1000
	if dur > 0 {
		r.DevicesPerSecond = math.Round(float64(r.Succeeded)/dur.Seconds()*10) / 10
	}
	for p, ds := range per {
		r.Latency = append(r.Latency, latencyOf(fl.phases[p], ds))
	}
	if fl.span != "" {
		r.Latency = append(r.Latency, latencyOf(fl.span, prov))
	}
	r.Latency = append(r.Latency, latencyOf(PhaseTotal, total))
	for i, b := range buckets {
		slices.Sort(b.prov)
		slices.Sort(b.total)
		r.Timeline = append(r.Timeline, Second{Second: i, Completed: b.ok, Failed: b.failed,
			P99ProvisioningMs: ms(quantile(b.prov, .99)), P99TotalMs: ms(quantile(b.total, .99))})
	}
	if len(r.ErrorExamples) == 0 {
		r.ErrorExamples = nil
	}
	return r
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteText writes r for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "provisioning storm: %s dialect, %s credentials, %d devices against %s\n", r.Dialect, r.Credentials, r.Devices, r.Target)
	arrival := fmt.Sprintf("%d in flight", r.Concurrency)
	if r.Rate > 0 {
		arrival = fmt.Sprintf("%g devices/s", r.Rate)
		if r.RampSeconds > 0 {
			arrival += fmt.Sprintf(" after a %gs ramp", r.RampSeconds)
		}
		if r.Concurrency > 0 {
			arrival += fmt.Sprintf(", at most %d in flight", r.Concurrency)
		}
	}
	src := "the system's choice"
	if r.Sources > 0 {
		src = fmt.Sprintf("127.0.0.2–127.0.0.%d", r.Sources+1)
	}
	fmt.Fprintf(&b, "arrival:   %s; source addresses: %s", arrival, src)
	if r.Kept {
		b.WriteString("; devices kept connected")
	}
	switch r.DPSPoll {
	case "at once":
		fmt.Fprintf(&b, "\npolling:   at once after \"assigning\" (--dps-poll-now; the server said retry-after %g s)", r.DPSRetryAfterSeconds)
	case "retry-after":
		fmt.Fprintf(&b, "\npolling:   after the retry-after the server gave with \"assigning\" (%g s)", r.DPSRetryAfterSeconds)
	}
	if r.CredentialsSeconds > 0 {
		fmt.Fprintf(&b, "\ncerts:     %d device keys and certificates made before the storm in %.2f s (not in the figures below)", r.Devices, r.CredentialsSeconds)
	}
	fmt.Fprintf(&b, "\nresult:    %d succeeded, %d failed, in %.2f s: %.0f devices/s\n", r.Succeeded, r.Failed, r.DurationSeconds, r.DevicesPerSecond)
	fmt.Fprintf(&b, "bench CPU: %.1f s (%.0f%% of one core)\n\n", r.BenchCPUSeconds, r.BenchCPUPercent)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tdevices\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, l := range r.Latency {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t\n", l.Phase, l.Count, l.P50, l.P90, l.P99, l.Max)
	}
	tw.Flush()

	if r.Failed == 0 {
		b.WriteString("\nerrors:    none\n")
	} else {
		b.WriteString("\nerrors by kind:\n")
		kinds := slices.SortedFunc(maps.Keys(r.Errors), func(a, c Kind) int { return cmp.Compare(r.Errors[c], r.Errors[a]) })
		for _, k := range kinds {
			fmt.Fprintf(&b, "  %-17s %7d  e.g. %s\n", k, r.Errors[k], r.ErrorExamples[k])
		}
	}
	if r.Server != nil {
		b.WriteByte('\n')
		r.Server.writeText(&b)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
