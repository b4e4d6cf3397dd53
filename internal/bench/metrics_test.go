package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestServerFigures(t *testing.T) {
	// Two readings of a zerotouch-like /metrics: 100 provisionings in
	// between, 98 of them within 10 ms and 2 within 25 ms.
	var call atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := float64(call.Add(1) - 1) // 0 before, 1 after
		fmt.Fprintf(w, "# HELP x y\n")
		fmt.Fprintf(w, "zerotouch_provision_attempts_total{dialect=\"thingsboard\",result=\"success\"} %v\n", 5+100*k)
		fmt.Fprintf(w, "zerotouch_provision_attempts_total{dialect=\"thingsboard\",result=\"bad_secret\"} 3\n")
		fmt.Fprintf(w, "zerotouch_provision_duration_seconds_bucket{dialect=\"thingsboard\",le=\"0.01\"} %v\n", 5+98*k)
		fmt.Fprintf(w, "zerotouch_provision_duration_seconds_bucket{dialect=\"thingsboard\",le=\"0.025\"} %v\n", 5+100*k)
		fmt.Fprintf(w, "zerotouch_provision_duration_seconds_bucket{dialect=\"thingsboard\",le=\"+Inf\"} %v\n", 5+100*k)
		fmt.Fprintf(w, "zerotouch_provision_duration_seconds_sum{dialect=\"thingsboard\"} %v\n", 0.5*k)
		fmt.Fprintf(w, "zerotouch_provision_duration_seconds_count{dialect=\"thingsboard\"} %v\n", 5+100*k)
		fmt.Fprintf(w, "zerotouch_telemetry_pending_records 0\n")
		fmt.Fprintf(w, "zerotouch_telemetry_commits_total %v\n", 10+7*k)
		fmt.Fprintf(w, "process_cpu_seconds_total %v\n", 1+2*k)
	}))
	defer srv.Close()
	before, err := scrapeMetrics(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := serverFigures(context.Background(), srv.URL, before, nil, time.Now())
	if f.Error != "" || f.ProvisionResults["success"] != 100 || len(f.ProvisionResults) != 1 {
		t.Errorf("results %v (%s)", f.ProvisionResults, f.Error)
	}
	if f.ProvisionMeanMs != 5 || f.ProvisionP99Ms != 25 || f.TelemetryCommits != 7 || f.CPUSeconds != 2 {
		t.Errorf("figures %+v", f)
	}
}
