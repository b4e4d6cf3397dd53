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
	return newGroupCmd("bench", "Load tests with simulated devices (provisioning storms)", newBenchProvisionCmd(client))
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
	if o.httpURL == "" {
		o.httpURL = client.server
	}
	u, err := url.Parse(o.httpURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError(cmd, fmt.Errorf("--http %q: want http://host:port", o.httpURL))
	}
	if cfg.MQTTAddr == "" {
		cfg.MQTTAddr = net.JoinHostPort(u.Hostname(), "1883")
	}
	cfg.MetricsURL = o.httpURL
	if cfg.Rate > 0 && !cmd.Flags().Changed("concurrency") {
		cfg.Concurrency = 0 // open loop unless a cap is asked for
	}
	if (cfg.ProfileKey == "") != (cfg.ProfileSecret == "") {
		return usageError(cmd, errors.New("give both --profile-key and --profile-secret"))
	}
	// Checked before any fixture is made.
	check := cfg
	if check.ProfileKey == "" {
		check.ProfileKey, check.ProfileSecret = "-", "-"
	}
	if err := check.Validate(); err != nil {
		return usageError(cmd, err)
	}
	if cfg.NamePrefix == "" {
		cfg.NamePrefix = check.NamePrefix
	}
	stderr := cmd.ErrOrStderr()
	var fx *bench.Fixture
	if cfg.ProfileKey == "" {
		if client.key() == "" {
			return usageError(cmd, errors.New("no profile: give --profile-key and --profile-secret, or an API key (--api-key or ZEROTOUCH_API_KEY) to create a temporary one"))
		}
		c, err := apiclient.New(o.httpURL, client.key())
		if err != nil {
			return usageError(cmd, err)
		}
		if fx, err = bench.CreateFixture(ctx, c, cfg.NamePrefix+"profile"); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "created temporary profile %s (%s)\n", fx.Name, fx.ProfileID)
		cfg.ProfileKey, cfg.ProfileSecret = fx.Key, fx.Secret
	}
	if f, ok := stderr.(*os.File); ok {
		cfg.ProgressTTY = isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
	}
	cfg.Progress = stderr
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
	if fx != nil {
		o.cleanup(ctx, stderr, fx)
	}
	if runErr != nil {
		var fl *bench.FileLimitError
		if errors.As(runErr, &fl) {
			return &exitError{code: exitFailure, err: runErr}
		}
		return runErr
	}
	if !rep.OK() {
		return &exitError{code: exitFailure, err: fmt.Errorf("%d of %d devices failed", rep.Failed, rep.Devices)}
	}
	return nil
}

// cleanup deletes the temporary profile and its devices, or says what was
// kept. It runs even when the storm was interrupted, so that an
// interrupted run leaves nothing behind.
func (o *benchProvisionOptions) cleanup(ctx context.Context, w io.Writer, fx *bench.Fixture) {
	if o.keepFixtures {
		fmt.Fprintf(w, "kept profile %s (%s) and its devices: provision key %s\n", fx.Name, fx.ProfileID, fx.Key)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cleanupWindow)
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
