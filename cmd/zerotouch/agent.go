package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/agent"
)

const agentHelp = `Run the device agent: what a device or gateway runs to provision itself
once and then work as a ThingsBoard device (dialect thingsboard, the default)
or as an Azure IoT Hub device registered through DPS (dialect azure-dps),
against zerotouch or, for Azure, Azure itself.

On the first start (no state file) the agent provisions with the profile's
provision key and secret over MQTT (/provision/request, user "provision")
and stores the credentials it gets in the state file, atomically and with
permissions 0600. Every later start reads the state file and connects with
those credentials; it never provisions again while the file exists.

Connected, it sends telemetry every interval (from a command, a file, or the
host's own metrics: cpu, memory, load1/5/15, uptime, temperature), gives
shared attributes to the attribute command (JSON on stdin, also once at each
connection), and answers commands (RPC) with the RPC command: the request
{"method","params"} on stdin, the answer (JSON) on stdout; a command that
fails or runs past handlers.timeout answers {"error": "..."}. Commands run
with /bin/sh -c. Lost connections are retried with exponential backoff and
jitter (at most a minute apart). SIGINT or SIGTERM stop it (exit 0).

Refused credentials: when the server refuses the stored credentials (revoked,
device deleted or disabled), the agent provisions again, once. Under the
profile's reprovision policy "rotate" it gets new credentials, stores them
and continues. Under "never" the server refuses: the agent exits with status
1 and says what to do: the operator deletes the device, enables it, or sets
the profile's reprovisionPolicy to rotate; then start the agent again. A
refused provisioning request (wrong key or secret) also exits with status 1.

Azure (dialect azure-dps): on the first start the agent registers with DPS
over MQTTS (port 8883 unless dps.host names one) with its symmetric key, the
key derived from its enrollment group's key, or its X.509 certificate; it
waits the retry-after of the "assigning" answer, polls until "assigned", and
stores the assigned hub, its device id and its credential (the device key,
never the group key; or the certificate and key paths) in the state file,
0600. It then connects to that hub (client id = device id, a SAS token valid
an hour, renewed by reconnecting before it expires, or the certificate), reads
its twin and gives the desired properties to the attribute command (and each
later desired-properties patch), reports agentVersion, os, arch and hostname as
reported properties, sends telemetry to devices/{id}/messages/events/ at
QoS 1, answers direct methods with the RPC command (status 200 and its JSON
output, or 500 {"error": ...}), and gives cloud-to-device messages to the
message command ({"properties":{...},"payload":...} on stdin; logged only
without one). DPS answers "disabled" or "failed", or a 4xx status: the agent
exits 1 and says why; 429 and 5xx are retried after their retry-after. When
the hub refuses the stored credentials the agent registers again, once: the
enrollment's reprovisioning policy decides; refused again, it exits 1.

Certificate renewal: a device that authenticates with a client certificate
of zerotouch's built-in CA (credentials X509_CERTIFICATE, or an azure-dps
certificate, chaining to tls.caFile / caFile) renews it before it expires.
At start and then every renewal.checkInterval (1h), once renewal.renewAt of
its lifetime has passed (0.66: when a third remains), it makes a new key of
the same algorithm and a request with the same subject, posts it to
<renewal.url>/.well-known/est/simplereenroll (EST, RFC 7030) with the current
certificate as TLS client certificate, checks the answer (chains to the
trusted CAs, same subject, the new key, valid now), writes the new pair
beside the state file (device-<serial>.crt and .key, 0600), names it in the
state file as pending and reconnects with it. Once it has connected with it,
the new pair replaces the previous one (which the server then revokes,
superseded); if the server refuses it, the agent drops it and goes on with
the previous pair. A pending pair survives a restart: the next start tries it
first. Failures and refusals are logged and retried with backoff, at most
renewal.checkInterval apart; the current certificate works until it expires.
The files named in the configuration are never changed. Not done by --once.

Logs go to stderr; nothing is printed on stdout.

Configuration (YAML; only server, provision and stateFile are required):

  server: hub.example.com:1883      # MQTT host:port (8883 with tls)
  # tls: {caFile: /etc/zerotouch-agent/ca.pem}   # MQTTS; serverName: optional
  dialect: thingsboard              # default; azure-dps: see below
  provision: {key: Kq3..., secret: x7T...}
  device: press-7                   # default: the host name
  credentials:
    type: ACCESS_TOKEN              # or MQTT_BASIC, X509_CERTIFICATE
    # token: ...                    # empty: generated by the server
    # clientId/username/password    # MQTT_BASIC; all empty: generated
    # certFile/keyFile              # X509_CERTIFICATE (needs tls)
  stateFile: /var/lib/zerotouch-agent/state.json
  telemetry:
    interval: 30s
    source: system                  # or command (command: "...") or file (file: /run/sensors.json)
  handlers:
    attributes: "logger -t zerotouch-attrs"
    rpc: "/usr/local/bin/handle-rpc"
    timeout: 10s
  renewal:                          # X.509 devices with a certificate of zerotouch's CA
    url: https://hub.example.com:8443   # EST server; default https://<server or dps.host host>:8443
    renewAt: 0.66                   # fraction of the lifetime after which to renew (0 < renewAt < 1)
    checkInterval: 1h
    # disabled: true

Azure configuration (dps.host, dps.idScope, dps.registrationId, one credential
and stateFile are required; telemetry and handlers as above, plus
handlers.message):

  dialect: azure-dps
  dps:
    host: zt.example.com            # or global.azure-devices-provisioning.net; :port optional (8883)
    idScope: 0ne3F2A91C7            # zerotouch idscope
    registrationId: press-0042      # lower case; default with a certificate: its common name
    symmetricKey: "base64..."       # individual enrollment; or:
    # groupKey: "base64..."         # enrollment group: the device key is derived
    # certificate: /etc/zerotouch-agent/device.pem   # X.509, with key:
    # key: /etc/zerotouch-agent/device.key
    # payload: {model: press}       # optional, for custom allocation
  caFile: /etc/zerotouch-agent/ca.pem   # CAs of DPS and hub; default: the system's
  stateFile: /var/lib/zerotouch-agent/state.json
  handlers:
    message: "logger -t zerotouch-c2d"`

func newDeviceRunCmd() *cobra.Command {
	var (
		configFile string
		once       bool
		logLevel   string
	)
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the device agent (ThingsBoard or Azure DPS): provision once, then send telemetry and answer attributes and commands",
		Long:  agentHelp,
		Example: "  zerotouch device run --config /etc/zerotouch-agent/agent.yaml\n" +
			"  zerotouch device run --config agent.yaml --once   # provision if needed, send one message, exit",
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if configFile == "" {
				return usageError(cmd, errors.New("--config is required"))
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError(cmd, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel))
			}
			cfg, err := agent.LoadConfig(configFile)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			a, err := agent.New(cfg, agent.Options{Logger: log})
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if once {
				return a.Once(cmd.Context())
			}
			// Run returns nil when the context ends: main's context ends on
			// SIGINT and SIGTERM, which makes those a clean exit 0.
			if err := a.Run(cmd.Context()); err != nil {
				return err
			}
			log.Info("stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "the agent's YAML configuration file (required)")
	f.BoolVar(&once, "once", false, "provision if needed, send one telemetry message, and exit")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
