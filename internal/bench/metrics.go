package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// metricsSnapshot is one reading of /metrics: series (name{labels}) →
// value.
type metricsSnapshot map[string]float64

// scrapeMetrics reads base/metrics (Prometheus text format).
func scrapeMetrics(ctx context.Context, base string) (*metricsSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	m := metricsSnapshot{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return &m, sc.Err()
}

// sum adds the series of metric name whose labels contain every one of
// labels (`key="value"`).
func (m metricsSnapshot) sum(name string, labels ...string) (float64, bool) {
	var total float64
	found := false
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		if !containsAll(k, labels) {
			continue
		}
		total += v
		found = true
	}
	return total, found
}

func containsAll(s string, subs []string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// byLabel returns, for metric name, value per value of label.
func (m metricsSnapshot) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	prefix := name + "{"
	for k, v := range m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		_, rest, ok := strings.Cut(k, label+`="`)
		if !ok {
			continue
		}
		val, _, _ := strings.Cut(rest, `"`)
		out[val] += v
	}
	return out
}

// ServerFigures are the server's own figures over the storm: differences
// of its counters between before and after, and gauges read after.
// Absent metrics (a server that is not zerotouch) stay zero.
type ServerFigures struct {
	// Error says why the figures are missing or partial.
	Error string `json:"error,omitempty"`
	// ProvisionResults counts provisioning attempts by result (success or
	// the refusal reason), every dialect together.
	ProvisionResults map[string]float64 `json:"provisionResults,omitempty"`
	// ProvisionMeanMs is the server's mean time from request to durable
	// answer; ProvisionP99Ms the upper bound of the histogram bucket
	// holding its 99th percentile (-1: above the largest bound).
	ProvisionMeanMs float64 `json:"provisionMeanMs,omitempty"`
	ProvisionP99Ms  float64 `json:"provisionP99UpperBoundMs,omitempty"`
	// RefusedConnections counts CONNECTs refused for capacity, by reason.
	RefusedConnections map[string]float64 `json:"refusedConnections,omitempty"`
	// DeviceMessages counts device messages by result.
	DeviceMessages map[string]float64 `json:"deviceMessages,omitempty"`
	// TelemetryCommits and TelemetryRecords are durable telemetry commits
	// and the records they held (the registry's provisioning commits are
	// not exported).
	TelemetryCommits float64 `json:"telemetryCommits"`
	TelemetryRecords float64 `json:"telemetryCommittedRecords"`
	// ConnectedDevices is the server's count after the storm (before kept
	// sessions are closed).
	ConnectedDevices float64 `json:"connectedDevicesAfter"`
	// CPUSeconds is the server process's CPU time between the readings
	// before and after the storm, and CPUPercent that over the time
	// between them (100 = one core).
	CPUSeconds float64 `json:"cpuSeconds"`
	CPUPercent float64 `json:"cpuPercent"`
	// RSSMiB is the server's resident memory after the storm.
	RSSMiB float64 `json:"rssMiB"`
}

// serverFigures reads /metrics after the storm, once the server has
// committed the telemetry it took in (up to 10 s), and compares.
func serverFigures(ctx context.Context, base string, before *metricsSnapshot, beforeErr error, beforeAt time.Time) *ServerFigures {
	f := &ServerFigures{}
	if beforeErr != nil {
		f.Error = "reading /metrics before the storm: " + beforeErr.Error()
		return f
	}
	var after *metricsSnapshot
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		after, err = scrapeMetrics(ctx, base)
		if err != nil {
			f.Error = "reading /metrics after the storm: " + err.Error()
			return f
		}
		if p, _ := after.sum("zerotouch_telemetry_pending_records"); p == 0 || time.Now().After(deadline) {
			break
		}
	}
	// The counters moved between the two readings, which frame the
	// storm: CPU is shared over that span.
	span := time.Since(beforeAt)
	a, b := *after, *before
	diff := func(name string, labels ...string) float64 {
		x, _ := a.sum(name, labels...)
		y, _ := b.sum(name, labels...)
		return x - y
	}
	diffBy := func(name, label string) map[string]float64 {
		out := map[string]float64{}
		old := b.byLabel(name, label)
		for k, v := range a.byLabel(name, label) {
			if d := v - old[k]; d != 0 {
				out[k] = d
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	f.ProvisionResults = diffBy("zerotouch_provision_attempts_total", "result")
	if n := diff("zerotouch_provision_duration_seconds_count"); n > 0 {
		f.ProvisionMeanMs = round1(diff("zerotouch_provision_duration_seconds_sum") / n * 1000)
		f.ProvisionP99Ms = histogramQuantile(a, b, "zerotouch_provision_duration_seconds_bucket", 0.99) * 1000
		if math.IsInf(f.ProvisionP99Ms, 0) {
			f.ProvisionP99Ms = -1 // above the largest bucket; JSON has no infinity
		}
	}
	f.RefusedConnections = diffBy("zerotouch_mqtt_refused_connections_total", "reason")
	f.DeviceMessages = diffBy("zerotouch_device_messages_total", "result")
	f.TelemetryCommits = diff("zerotouch_telemetry_commits_total")
	f.TelemetryRecords = diff("zerotouch_telemetry_committed_records_total")
	f.ConnectedDevices, _ = a.sum("zerotouch_connected_devices")
	f.CPUSeconds = round1(diff("process_cpu_seconds_total"))
	f.CPUPercent = math.Round(100 * f.CPUSeconds / span.Seconds())
	rss, _ := a.sum("process_resident_memory_bytes")
	f.RSSMiB = round1(rss / (1 << 20))
	return f
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

// histogramQuantile returns the upper bound of the bucket holding the q
// quantile of the observations a histogram gained between b and a (all
// label sets together).
func histogramQuantile(a, b metricsSnapshot, bucket string, q float64) float64 {
	counts := map[float64]float64{}
	for k, v := range a {
		if !strings.HasPrefix(k, bucket+"{") {
			continue
		}
		_, rest, ok := strings.Cut(k, `le="`)
		if !ok {
			continue
		}
		le, _, _ := strings.Cut(rest, `"`)
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		counts[bound] += v - b[k]
	}
	bounds := make([]float64, 0, len(counts))
	for k := range counts {
		bounds = append(bounds, k)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return 0
	}
	total := counts[bounds[len(bounds)-1]] // cumulative: +Inf holds all
	for _, le := range bounds {
		if counts[le] >= q*total {
			return le
		}
	}
	return math.Inf(1)
}

func (f *ServerFigures) writeText(b *strings.Builder) {
	b.WriteString("server (/metrics, change over the storm):\n")
	if f.Error != "" {
		fmt.Fprintf(b, "  unavailable: %s\n", f.Error)
		if f.ProvisionResults == nil {
			return
		}
	}
	fmt.Fprintf(b, "  provisioning results:   %s\n", formatCounts(f.ProvisionResults))
	if f.ProvisionMeanMs > 0 {
		p99 := fmt.Sprintf("p99 ≤ %g ms", f.ProvisionP99Ms)
		if f.ProvisionP99Ms < 0 {
			p99 = "p99 above the largest histogram bucket"
		}
		fmt.Fprintf(b, "  provisioning time:      mean %.1f ms, %s (request to durable answer, from the server's histogram)\n", f.ProvisionMeanMs, p99)
	}
	fmt.Fprintf(b, "  device messages:        %s\n", formatCounts(f.DeviceMessages))
	fmt.Fprintf(b, "  telemetry commits:      %.0f (%.0f records)\n", f.TelemetryCommits, f.TelemetryRecords)
	fmt.Fprintf(b, "  refused CONNECTs:       %s\n", formatCounts(f.RefusedConnections))
	fmt.Fprintf(b, "  connected devices:      %.0f after the storm\n", f.ConnectedDevices)
	fmt.Fprintf(b, "  server CPU:             %.1f s (%.0f%% of one core), RSS %.1f MiB after\n", f.CPUSeconds, f.CPUPercent, f.RSSMiB)
}

func formatCounts(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.0f", k, m[k])
	}
	return strings.Join(parts, ", ")
}
