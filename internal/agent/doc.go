// Package agent is the device side of zerotouch: the program a real device
// or gateway runs (`zerotouch device run`) to provision itself once, keep
// its credentials, and then work as a ThingsBoard device against the hub.
//
// # Life of an agent
//
//  1. Read the configuration (Config, a YAML file).
//  2. Read the state file. When it holds credentials, use them; only when
//     it is absent does the agent provision: it connects as the MQTT user
//     "provision", publishes its request on /provision/request and reads the
//     answer on /provision/response on the same connection. The credentials
//     it gets are written to the state file atomically (a temporary file in
//     the same directory, fsync, rename, fsync of the directory) with
//     permissions 0600, before they are used: a crash at any point leaves
//     either no state file or a complete one, never half a file, so the
//     agent never provisions twice for one identity by accident.
//  3. Connect with the stored credentials, subscribe to shared attribute
//     updates (v1/devices/me/attributes) and commands
//     (v1/devices/me/rpc/request/+), ask once for the current shared
//     attributes (v1/devices/me/attributes/request/1) and apply them, then
//     publish telemetry (v1/devices/me/telemetry) every interval.
//  4. When the connection drops or cannot be made, retry with exponential
//     backoff and full jitter (capped, never a tight loop). SIGINT and
//     SIGTERM end the agent cleanly (Run returns nil).
//
// # Refused credentials
//
// When the server refuses the stored credentials (CONNACK "bad user name or
// password" or "not authorized": the credential was revoked, the device
// deleted or disabled, the data wiped), the agent provisions again, once.
// The server's reprovisioning policy for the device's profile then decides:
//
//   - rotate: the device keeps its identity and gets new credentials (the old
//     ones are revoked); the agent stores them atomically and continues.
//   - never (ThingsBoard's behaviour): the request is refused because the
//     device is already provisioned. The agent stops with ErrRefused and a
//     message saying what to do: an operator deletes the device or switches
//     its profile to rotate (or enables the device), then the agent is
//     started again. The state file is left as it is.
//
// A disabled device is refused the same way, and the message asks for it
// to be enabled. A device that lost its state file meets the same rule on
// its first provisioning request: under never it is refused as already
// provisioned, and the agent says so. A client certificate refused in the
// TLS handshake (rather than by CONNACK) counts as a refusal too.
//
// When the new credentials are refused as well, the agent stops too rather
// than provisioning in a loop. A refusal of the provisioning request itself
// (wrong key or secret, unknown pre-provisioned device) is final as well;
// only network failures are retried.
//
// # Handlers
//
// Telemetry comes from a shell command printing a JSON object, a JSON file,
// or the host's own metrics (Linux /proc and /sys: CPU and memory use, load
// average, uptime, temperature). Shared attribute updates are given as JSON
// on the standard input of the attribute command; a command (RPC) is given
// as {"method": …, "params": …} to the RPC command, whose standard output
// (JSON) is the answer. A command that fails, prints no JSON or runs past
// its timeout answers {"error": "…"}.
//
// Only the ThingsBoard dialect is implemented; Config.Dialect is where
// Azure DPS and AWS fleet provisioning will be selected.
package agent
