// Package agent is the device side of zerotouch: the program a real device
// or gateway runs (`zerotouch device run`) to provision itself once, keep
// its credentials, and then work against its hub, in one of two dialects
// (Config.Dialect): as a ThingsBoard device ("thingsboard", the default),
// or as an Azure IoT Hub device registered through DPS ("azure-dps"),
// against zerotouch or Azure itself.
//
// # Life of an agent (thingsboard)
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
// # Life of an agent (azure-dps)
//
//  1. Read the configuration: dps.host (port 8883 unless given),
//     dps.idScope, dps.registrationId and exactly one credential:
//     dps.symmetricKey (an individual enrollment), dps.groupKey (an
//     enrollment group: the device key is derived as
//     base64(HMAC-SHA256(groupKey, registrationId))) or dps.certificate and
//     dps.key (X.509; the registration id defaults to the certificate's
//     common name, which DPS requires). caFile names the CAs trusted for
//     DPS and the hub.
//  2. Read the state file; only when it is absent does the agent register,
//     over MQTTS: client id the registration id, user name
//     "<idScope>/registrations/<id>/api-version=2019-03-31&ClientVersion=…",
//     password a SAS token for "<idScope>/registrations/<id>" (skn
//     registration) or the client certificate; it subscribes to
//     $dps/registrations/res/#, publishes the registration, gets 202
//     "assigning" with an operationId, waits the retry-after (2 s when none
//     is given; at once only for retry-after=0), polls until 200
//     "assigned", and stores the assigned hub, the device id, the
//     operation id and the credential to use — the device key (never the
//     group key) or the certificate and key paths — atomically and 0600
//     as above. 429 and 5xx answers are retried after their retry-after;
//     status "disabled" or "failed" and other 4xx are final (a
//     ProvisionError, ErrRefused) and nothing is stored.
//  3. Connect to the assigned hub (used verbatim, port 8883 unless it has
//     one): client id the device id, user name
//     "<hub>/<deviceId>/?api-version=2021-04-12&DeviceClientType=zerotouch-agent",
//     password a SAS token for URLEncode("<hub>/devices/<deviceId>")
//     signed with the device key and valid Options.TokenLifetime (an hour;
//     after three quarters of it the agent reconnects with a fresh one), or
//     the client certificate. Subscribe to $iothub/twin/res/#,
//     $iothub/twin/PATCH/properties/desired/#, $iothub/methods/POST/# and
//     devices/<id>/messages/devicebound/#; GET the twin and give its
//     desired properties to the attribute command (and every desired patch
//     later); report the host's facts (agentVersion, os, arch, hostname) as
//     reported properties; publish telemetry to
//     devices/<id>/messages/events/ at QoS 1 every interval.
//  4. Reconnect as for ThingsBoard.
//
// # Refused credentials (thingsboard)
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
// # Refused credentials (azure-dps)
//
// When the hub refuses the stored credentials (CONNACK 4 or 5, or a client
// certificate refused in the handshake), the agent registers again with
// DPS, once, and the enrollment's reprovisioning policy decides which hub
// and device it gets; the new assignment is stored and used. When DPS
// refuses (the enrollment or the device is disabled, the key is wrong) or
// the hub refuses the new assignment too, the agent stops with ErrRefused
// and says what to do; the state file is kept.
//
// # Certificate renewal
//
// A device that authenticates with a client certificate of zerotouch's
// built-in CA renews it before it expires, over EST (RFC 7030) on the
// server's HTTPS listener (Config.Renewal; see renew.go and est.go). That
// is a ThingsBoard device with credentials X509_CERTIFICATE whose
// credentials.certFile was issued by the CA (the operator issues it from
// a CSR, POST /api/devices/{id}/certificates, typically after the device
// provisioned, and puts it in the configured files), or an azure-dps
// device whose dps.certificate was. A certificate is renewed only when it
// chains to the configured CAs (tls.caFile, caFile); a self-signed or
// manufacturer's certificate is left alone.
//
//  1. At start (before connecting) and then every renewal.checkInterval
//     (an hour; sooner when the due time is nearer), the agent reads its
//     current certificate. It is due when renewal.renewAt (0.66) of its
//     lifetime has passed.
//  2. Due, it makes a new key of the same algorithm (ECDSA curve, RSA
//     size, Ed25519), a PKCS#10 request with the same subject, and POSTs
//     its base64 to <renewal.url>/.well-known/est/simplereenroll
//     (https://<host of server or dps.host>:8443 by default) with the
//     current pair as TLS client certificate. The answer, a base64
//     certs-only PKCS#7, must hold a certificate that chains to the
//     trusted CAs for client authentication, has the same subject, holds
//     the new public key and is valid now.
//  3. The new key and certificate are written atomically (0600) beside the
//     state file as device-<serial>.key and .crt, then the state file
//     names them as pending (PendingCertFile, PendingKeyFile). The previous
//     pair is kept: a crash at any point leaves a working pair.
//  4. The agent reconnects; a pending pair is always tried first. Once a
//     CONNECT with it succeeds it becomes the current pair (CertFile,
//     KeyFile; the server revokes the previous certificate, superseded),
//     and the previous pair's files are deleted if the agent wrote them —
//     never the files the configuration names. If the server refuses the
//     pending pair, or it cannot be read, it is dropped (files deleted)
//     and the previous pair is used again.
//
// Failures (server out of reach, an answer that does not check out) and
// refusals (4xx, or the certificate refused in the TLS handshake: revoked,
// device disabled) are logged with the certificate's expiry and retried
// with exponential backoff, at most renewal.checkInterval apart; the
// current certificate keeps working until it expires. An expired
// certificate cannot be renewed: the agent says so. Once does not renew.
//
// Known limits: when a device provisions or registers again (refused
// credentials), it presents the configured certificate, not a renewed one.
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
// For Azure, desired properties (the twin's at connect, then each patch,
// with its $version) go to the attribute command; a direct method is given
// as {"method": …, "params": …} to the RPC command and answered with
// status 200 and its output, or 500 and {"error": "…"} (501 without an RPC
// command); a cloud-to-device message is logged and, when
// handlers.message is set, given to that command as
// {"properties": {…}, "payload": …}.
//
// AWS fleet provisioning is not implemented yet.
package agent
