// Package bench plays a fleet's first boot against a zerotouch server (or
// any server speaking the same dialect) and reports what happened: a
// provisioning storm of simulated devices, each doing the whole exchange a
// real device does — connect with the dialect's provisioning identity,
// provision, disconnect, reconnect with the credentials it was given and
// publish its first telemetry — with the latency of every phase, the
// errors by kind and the server's own figures read from /metrics.
//
// The devices are cheap on purpose: a lean MQTT 3.1.1 client (mqtt.go)
// with one goroutine and a small buffer per connection, so that tens of
// thousands of them fit in the benchmark process next to the server.
//
// Two exchanges exist: the ThingsBoard dialect with server-generated
// access tokens, and Azure DPS registration over MQTT over TLS with
// symmetric keys or X.509 certificates (dps.go, x509.go), then the
// device's first message on its hub. Config.Validate refuses the others by
// name, and a dialect is added as a flow (see flows in storm.go).
package bench
