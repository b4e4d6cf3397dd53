package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/bench"
)

// newBenchCmd is the "bench" group: load tools that play simulated devices
// against a server.
func newBenchCmd(client *clientOptions) *cobra.Command {
	return newGroupCmd("bench", "Load tests with simulated devices (provisioning storms, telemetry)", newBenchProvisionCmd(client), newBenchTelemetryCmd(client))
}

// benchProvisionOptions are the flags of "bench provision".
type benchProvisionOptions struct {
	cfg           bench.Config
	httpURL       string
	keepFixtures  bool
	chart         string
	cleanupWindow time.Duration
}

func newBenchProvisionCmd(client *clientOptions) *cobra.Command {
	o := &benchProvisionOptions{cleanupWindow: 5 * time.Minute}
	cmd := &cobra.Command{
		Use:   "provision [flags]",
		Short: "Provisioning storm: N simulated devices first-boot against a server",
		Long: `Provisioning storm: N simulated devices boot for the first time against a
server, each doing the whole exchange a real device does, and a report says
how fast and how well it went.

Each device (ThingsBoard dialect, access token credentials, MQTT 3.1.1):
connects with user name "provision", subscribes to /provision/response,
publishes its request on /provision/request and waits for the answer, then
disconnects, connects again with the token it got and publishes its first
telemetry at QoS 1, waiting for the PUBACK. It then disconnects, unless
--keep-connected holds every session until the end.

Devices arrive either at a fixed concurrency (-c: a new device starts when one
ends) or at a rate (--rate devices/s, open loop, optionally after a linear
--ramp; -c then caps the devices in flight). Against a loopback server the
connections come from 127.0.0.2, 127.0.0.3, … (--sources), because the hub
admits a limited number of pending connections per source host.

The devices provision against an existing profile (--profile-key and
--profile-secret), or, with an API key, against a temporary allow-create
profile created through the management API at --http and deleted at the end
with every device it got (one API call per device), unless --keep.

Live progress goes to stderr. The report goes to stdout: devices/s,
latency p50/p90/p99/max of every phase, errors by kind (connect, refused,
provision-failed, timeout, closed, protocol, local, canceled), and the
server's figures from its /metrics before and after (-o json for the same as
JSON). The exit code is 1 when any device failed. Traffic goes only to the
given server: --mqtt and --http.`,
		Example: `  # 10,000 devices, 64 at a time, temporary profile (API key from the environment)
  ZEROTOUCH_API_KEY=... zerotouch bench provision --http http://127.0.0.1:8080

  # 1,000 devices/s arrival after a 2 s ramp, with a chart
  zerotouch bench provision --rate 1000 --ramp 2s --chart storm.svg

  # an existing profile on another server, JSON report
  zerotouch bench provision --mqtt hub.example:1883 --http http://hub.example:8080 \
      --profile-key KEY --profile-secret SECRET -n 2000 -c 32 -o json

  # hold 10,000 sessions open until the end (needs open files; see ulimit -n)
  zerotouch bench provision --keep-connected -n 10000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, client)
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.cfg.Devices, "devices", "n", bench.DefaultDevices, "simulated devices")
	f.IntVarP(&o.cfg.Concurrency, "concurrency", "c", bench.DefaultConcurrency, "devices in flight at once (with --rate: their cap, when given)")
	f.Float64Var(&o.cfg.Rate, "rate", 0, "arrival rate in devices/s (0: fixed concurrency instead)")
	f.DurationVar(&o.cfg.Ramp, "ramp", 0, "with --rate: raise the rate linearly from 0 over this duration")
	f.StringVar(&o.cfg.Dialect, "dialect", bench.DialectThingsBoard, "provisioning dialect (only thingsboard so far)")
	f.StringVar(&o.cfg.Credentials, "credentials", bench.CredentialsToken, "credential type the devices get (only token so far)")
	f.StringVar(&o.cfg.MQTTAddr, "mqtt", "", "server's MQTT address host:port (default: the host of --http, port 1883)")
	f.StringVar(&o.httpURL, "http", "", "server's HTTP base URL, for /metrics and the temporary profile (default: --server)")
	f.StringVar(&o.cfg.ProfileKey, "profile-key", "", "provision key of an existing profile (instead of a temporary one)")
	f.StringVar(&o.cfg.ProfileSecret, "profile-secret", "", "provision secret of that profile")
	f.BoolVar(&o.keepFixtures, "keep", false, "keep the temporary profile and its devices")
	f.BoolVar(&o.cfg.KeepConnected, "keep-connected", false, "hold every device's session until the storm ends")
	f.IntVar(&o.cfg.Sources, "sources", bench.DefaultSources, "loopback source addresses 127.0.0.2… to spread over (loopback targets only)")
	f.DurationVar(&o.cfg.Timeout, "timeout", bench.DefaultTimeout, "limit of each step of a device's exchange")
	f.StringVar(&o.cfg.NamePrefix, "prefix", "", `device name prefix (default "bench-" and the start time)`)
	f.StringVar(&o.chart, "chart", "", "write an SVG chart of devices/s and p99 latency per second to this file")
	return cmd
}

func (o *benchProvisionOptions) run(cmd *cobra.Command, client *clientOptions) error {
	if err := client.checkOutput(cmd); err != nil {
		return err
	}
	ctx := cmd.Context()
	cfg := o.cfg
	if cfg.Rate > 0 && !cmd.Flags().Changed("concurrency") {
		cfg.Concurrency = 0 // open loop unless a cap is asked for
	}
	fx, err := prepareBench(cmd, client, &o.httpURL, &cfg.Target, cfg.Validate)
	if err != nil {
		return err
	}
	stderr := cmd.ErrOrStderr()
	rep, runErr := bench.Run(ctx, cfg)
	if runErr == nil {
		if o.chart != "" {
			if err := writeChart(o.chart, rep); err != nil {
				fmt.Fprintf(stderr, "chart: %v\n", err)
			}
		}
		out := cmd.OutOrStdout()
		if client.output == outputJSON {
			runErr = rep.WriteJSON(out)
		} else {
			runErr = rep.WriteText(out)
		}
	}
	if err := finishBench(ctx, stderr, fx, o.keepFixtures, o.cleanupWindow, runErr); err != nil {
		return err
	}
	if !rep.OK() {
		return &exitError{code: exitFailure, err: fmt.Errorf("%d of %d devices failed", rep.Failed, rep.Devices)}
	}
	return nil
}

// prepareBench resolves the server (--http, --mqtt) into t, checks the
// whole configuration with validate before anything is made on the
// server, points progress at stderr, and without --profile-key creates a
// temporary profile, which the caller hands to finishBench.
func prepareBench(cmd *cobra.Command, client *clientOptions, httpURL *string, t *bench.Target, validate func() error) (*bench.Fixture, error) {
	var err error
	if *httpURL, t.MQTTAddr, err = benchTarget(cmd, client, *httpURL, t.MQTTAddr); err != nil {
		return nil, err
	}
	t.MetricsURL = *httpURL
	if (t.ProfileKey == "") != (t.ProfileSecret == "") {
		return nil, usageError(cmd, errors.New("give both --profile-key and --profile-secret"))
	}
	temporary := t.ProfileKey == ""
	if temporary {
		t.ProfileKey, t.ProfileSecret = "-", "-" // the fixture's, once made
	}
	err = validate()
	if temporary {
		t.ProfileKey, t.ProfileSecret = "", ""
	}
	if err != nil {
		return nil, usageError(cmd, err)
	}
	stderr := cmd.ErrOrStderr()
	t.Progress, t.ProgressTTY = stderr, isTTY(stderr)
	if !temporary {
		return nil, nil
	}
	fx, err := benchFixture(cmd, client, *httpURL, t.NamePrefix)
	if err != nil {
		return nil, err
	}
	t.ProfileKey, t.ProfileSecret = fx.Key, fx.Secret
	return fx, nil
}

// finishBench removes the temporary profile (unless kept) and turns a run
// that could not proceed (too few open files) into exit code 1.
func finishBench(ctx context.Context, stderr io.Writer, fx *bench.Fixture, keep bool, window time.Duration, runErr error) error {
	if fx != nil {
		cleanupFixture(ctx, stderr, fx, keep, window)
	}
	var fl *bench.FileLimitError
	if errors.As(runErr, &fl) {
		return &exitError{code: exitFailure, err: runErr}
	}
	return runErr
}

// benchTarget checks the --http URL (default: --server) and derives the
// MQTT address from it when none is given.
func benchTarget(cmd *cobra.Command, client *clientOptions, httpURL, mqttAddr string) (string, string, error) {
	if httpURL == "" {
		httpURL = client.server
	}
	u, err := url.Parse(httpURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", usageError(cmd, fmt.Errorf("--http %q: want http://host:port", httpURL))
	}
	if mqttAddr == "" {
		mqttAddr = net.JoinHostPort(u.Hostname(), "1883")
	}
	return httpURL, mqttAddr, nil
}

// benchFixture creates a temporary allow-create profile through the
// management API, with the API key given.
func benchFixture(cmd *cobra.Command, client *clientOptions, httpURL, prefix string) (*bench.Fixture, error) {
	if client.key() == "" {
		return nil, usageError(cmd, errors.New("no profile: give --profile-key and --profile-secret, or an API key (--api-key or ZEROTOUCH_API_KEY) to create a temporary one"))
	}
	c, err := apiclient.New(httpURL, client.key())
	if err != nil {
		return nil, usageError(cmd, err)
	}
	fx, err := bench.CreateFixture(cmd.Context(), c, prefix+"profile")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "created temporary profile %s (%s)\n", fx.Name, fx.ProfileID)
	return fx, nil
}

// isTTY says whether w is a terminal (progress is then redrawn in place).
func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// cleanupFixture deletes the temporary profile and its devices, or says
// what was kept. It runs even when the run was interrupted, so that an
// interrupted run leaves nothing behind.
func cleanupFixture(ctx context.Context, w io.Writer, fx *bench.Fixture, keep bool, window time.Duration) {
	if keep {
		fmt.Fprintf(w, "kept profile %s (%s) and its devices: provision key %s\n", fx.Name, fx.ProfileID, fx.Key)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), window)
	defer cancel()
	fmt.Fprintf(w, "deleting the temporary profile's devices (one API call each)…\n")
	start := time.Now()
	n, err := fx.Cleanup(ctx, nil)
	if err != nil {
		fmt.Fprintf(w, "cleanup: %v (deleted %d devices); delete what is left with 'zerotouch device list --profile %s' and 'zerotouch profile delete %s'\n", err, n, fx.ProfileID, fx.ProfileID)
		return
	}
	fmt.Fprintf(w, "deleted %d devices and profile %s in %.1fs\n", n, fx.Name, time.Since(start).Seconds())
}

func writeChart(path string, rep *bench.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteSVG(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// benchTelemetryOptions are the flags of "bench telemetry".
type benchTelemetryOptions struct {
	cfg           bench.TelemetryConfig
	httpURL       string
	keepFixtures  bool
	cleanupWindow time.Duration
}

func newBenchTelemetryCmd(client *clientOptions) *cobra.Command {
	o := &benchTelemetryOptions{cleanupWindow: 10 * time.Minute}
	cmd := &cobra.Command{
		Use:   "telemetry [flags]",
		Short: "Telemetry load: M connected simulated devices publish at a rate; stored throughput and memory per connection",
		Long: `Telemetry load: M simulated devices provision, connect and publish telemetry
at a rate, and a report says what the server stored and what each connection
costs it.

First every device provisions (ThingsBoard dialect, access token, like
"bench provision"). The bench then reads the server's /metrics once nothing
is pending and --settle has passed, connects every device with its token
(-c at a time, from 127.0.0.2… against a loopback server, --sources), waits
again, and reads /metrics once more: the difference in resident memory over
the devices is the server's KiB per connection.

Then the devices publish on v1/devices/me/telemetry for --duration: --rate
messages/s in total, evenly spread over the devices and in time (device k of M
sends its j-th message at (k + j·M)/rate s; 0: idle sessions that only ping).
Every message is 100 bytes with the device's own timestamp, one millisecond
after its previous one, and 5 numeric values:
  {"ts":1764000000000,"values":{"temp":21.5,"hum":40.2,"pressure":1013,"voltage":230,"current":1.255}}
At --qos 1 a device has at most --window messages unacknowledged and waits for
a PUBACK when it has that many; at --qos 0 it sends open loop.

Stored means accepted (zerotouch_telemetry_values_total) and committed: the
clock runs from the first publish until zerotouch_telemetry_pending_records is
back to 0. The report gives messages and values sent, acknowledged and stored,
values/s stored, messages by result (overloaded, rate_limited…), refused
CONNECTs, the server's RSS before and after connecting and after the load, the
CPU of both sides, and errors by kind; -o json for the same as JSON. Live
progress goes to stderr. The exit code is 1 when a device failed or, at QoS 1,
a message went unacknowledged.

The server's limits apply: its per-device rate (--device-rate, 10 messages/s
by default) and its session cap (--mqtt-max-clients, 10,000 by default); start
it with higher ones for a heavy run. Every connection is an open file of this
process: it raises its own limit to the hard one and says which 'ulimit -n' to
set when that is not enough.`,
		Example: `  # 1,000 devices, 20,000 messages/s (100,000 values/s) for 10 s at QoS 1
  ZEROTOUCH_API_KEY=... zerotouch bench telemetry --http http://127.0.0.1:18080 --mqtt 127.0.0.1:18883 \
      -n 1000 --rate 20000 --duration 10s --qos 1

  # memory per connection: 10,000 devices, lightly loaded
  zerotouch bench telemetry --http http://127.0.0.1:18080 --mqtt 127.0.0.1:18883 -n 10000 --rate 2000 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, client)
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.cfg.Devices, "devices", "n", bench.DefaultTelemetryDevices, "simulated devices, all connected at once")
	f.Float64Var(&o.cfg.Rate, "rate", bench.DefaultTelemetryRate, "messages/s of all devices together (0: idle sessions)")
	f.DurationVar(&o.cfg.Duration, "duration", bench.DefaultTelemetryDuration, "how long the devices publish")
	f.IntVar(&o.cfg.QoS, "qos", 1, "QoS of the messages: 0 or 1")
	f.IntVar(&o.cfg.Window, "window", bench.DefaultWindow, "at QoS 1: most unacknowledged messages per device")
	f.IntVarP(&o.cfg.Concurrency, "concurrency", "c", bench.DefaultConcurrency, "devices provisioning, then connecting, at once")
	f.StringVar(&o.cfg.MQTTAddr, "mqtt", "", "server's MQTT address host:port (default: the host of --http, port 1883)")
	f.StringVar(&o.httpURL, "http", "", "server's HTTP base URL, for /metrics and the temporary profile (default: --server)")
	f.StringVar(&o.cfg.ProfileKey, "profile-key", "", "provision key of an existing allow-create profile issuing access tokens (instead of a temporary one)")
	f.StringVar(&o.cfg.ProfileSecret, "profile-secret", "", "provision secret of that profile")
	f.BoolVar(&o.keepFixtures, "keep", false, "keep the temporary profile and its devices")
	f.IntVar(&o.cfg.Sources, "sources", bench.DefaultSources, "loopback source addresses 127.0.0.2… to spread over (loopback targets only)")
	f.DurationVar(&o.cfg.Timeout, "timeout", bench.DefaultTimeout, "limit of each provisioning and connecting step, each write, and the wait for the last PUBACKs")
	f.DurationVar(&o.cfg.Settle, "settle", bench.DefaultSettle, "wait this long once the server has nothing pending before reading its memory")
	f.StringVar(&o.cfg.NamePrefix, "prefix", "", `device name prefix (default "bench-" and the start time)`)
	return cmd
}

func (o *benchTelemetryOptions) run(cmd *cobra.Command, client *clientOptions) error {
	if err := client.checkOutput(cmd); err != nil {
		return err
	}
	ctx := cmd.Context()
	cfg := o.cfg
	fx, err := prepareBench(cmd, client, &o.httpURL, &cfg.Target, cfg.Validate)
	if err != nil {
		return err
	}
	stderr := cmd.ErrOrStderr()
	rep, runErr := bench.RunTelemetry(ctx, cfg)
	if runErr == nil {
		out := cmd.OutOrStdout()
		if client.output == outputJSON {
			runErr = rep.WriteJSON(out)
		} else {
			runErr = rep.WriteText(out)
		}
	}
	if err := finishBench(ctx, stderr, fx, o.keepFixtures, o.cleanupWindow, runErr); err != nil {
		return err
	}
	if !rep.OK() {
		n := 0
		for _, c := range rep.Errors {
			n += c
		}
		var unacked int64
		if rep.QoS == 1 {
			unacked = rep.Sent - rep.Acked
		}
		return &exitError{code: exitFailure, err: fmt.Errorf("%d device errors, %d of %d devices connected, %d of %d messages unacknowledged", n, rep.Connected, rep.Devices, unacked, rep.Sent)}
	}
	return nil
}
