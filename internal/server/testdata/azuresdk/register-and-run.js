#!/usr/bin/env node
// Copyright zerotouch authors.
//
// Drives the *official* Azure IoT Node.js device SDK against a zerotouch server:
// DPS registration (MQTT or HTTPS, symmetric key or X.509), then IoT Hub over MQTT
// (telemetry, twin get, reported patch, optional direct method / desired patch / C2D).
//
// Output contract (for the Go test):
//   stdout: one JSON object per line, each with a "step" field:
//     {"step":"register", "transport":..., "result":<registrationState as returned by the SDK>}
//     {"step":"hub_connected", "host":..., "dial":..., "deviceId":...}
//     {"step":"telemetry", "seq":N}                       (once per message, after PUBACK)
//     {"step":"twin", "desired":{...}, "reported":{...}}
//     {"step":"reported", "patch":{"firmware":"1.2.3"}}
//     {"step":"method_ready"}                              (only with ZT_WAIT_METHOD)
//     {"step":"method", "name":"reboot", "payload":...}   (only with ZT_WAIT_METHOD)
//     {"step":"desired_ready"} / {"step":"desired", ...}  (only with ZT_WAIT_DESIRED)
//     {"step":"c2d_ready"} / {"step":"c2d", ...}          (only with ZT_WAIT_C2D)
//     {"step":"done"}
//   stderr: human-readable error plus one JSON line {"step":..., "error":...}; exit code != 0.
//   Exit codes: 0 ok, 1 operation failed, 2 bad configuration, 124 hard timeout.
//
// Environment:
//   ZT_DPS_HOST         DPS host (name or IP). May carry ":port" (MQTT takes it natively).
//   ZT_DPS_PORT         optional DPS port (default 8883 for MQTT, 443 for HTTP).
//   ZT_ID_SCOPE         ID scope.
//   ZT_REGISTRATION_ID  registration id.
//   ZT_SYMMETRIC_KEY    device key (base64), or
//   ZT_GROUP_KEY        enrollment-group key (base64): the device key is derived here, as apps do, or
//   ZT_CERT_FILE/ZT_KEY_FILE  PEM client certificate (chain) and key for X.509 attestation.
//   ZT_TRANSPORT        mqtt (default) | http   -- transport for DPS; the hub is always MQTT.
//   ZT_PAYLOAD          optional JSON sent as the registration "payload".
//   ZT_HUB_ADDR         optional "host:port" to dial for the hub instead of assignedHub
//                       (sent as GatewayHostName: the username and SAS keep assignedHub).
//   ZT_MESSAGES         telemetry count (default 3).
//   ZT_WAIT_METHOD      if set, wait for direct method "reboot", answer 200 {"ok":true}.
//   ZT_WAIT_DESIRED     if set, wait for one desired-properties patch.
//   ZT_WAIT_C2D         if set, wait for one cloud-to-device message.
//   ZT_SKIP_HUB         if set, stop after registration.
//   ZT_TIMEOUT_MS       hard timeout (default 60000).
//   NODE_EXTRA_CA_CERTS PEM file with the CA that signed the server certificates (read by node itself).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const path = require('path');

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt: ProvMqtt } = require('azure-iot-provisioning-device-mqtt');
const { Http: ProvHttp } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { Client, Message, X509AuthenticationProvider } = require('azure-iot-device');
const { Mqtt: HubMqtt } = require('azure-iot-device-mqtt');

let currentStep = 'init';

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function describeError(err) {
  if (!err) return { error: 'unknown error' };
  const d = { error: err.message || String(err), name: err.name || (err.constructor && err.constructor.name) };
  if (err.constructor && err.constructor.name && err.constructor.name !== d.name) d.type = err.constructor.name;
  if (err.code !== undefined) d.code = err.code;
  if (err.result !== undefined) d.result = err.result; // DPS: parsed body of the failing answer
  if (err.responseBody !== undefined) d.responseBody = err.responseBody; // DPS over HTTP
  if (err.response && err.response.statusCode) d.statusCode = err.response.statusCode;
  if (err.transportObject && err.transportObject.topic) d.topic = err.transportObject.topic;
  if (err.transportError && err.transportError !== err) {
    d.transportError = err.transportError.message || String(err.transportError);
  }
  return d;
}

let exiting = false;
function fail(err, exitCode) {
  if (exiting) return;
  exiting = true;
  const d = Object.assign({ step: currentStep }, describeError(err));
  process.stderr.write('zerotouch azure harness: step "' + currentStep + '" failed: ' + d.error + '\n');
  process.stderr.write(JSON.stringify(d) + '\n');
  process.exit(exitCode || 1);
}

function configError(msg) {
  currentStep = 'config';
  fail(new Error(msg), 2);
}

process.on('uncaughtException', (err) => fail(err, 1));
process.on('unhandledRejection', (err) => fail(err, 1));

const timeoutMs = Number(process.env.ZT_TIMEOUT_MS || 60000);
const hardTimer = setTimeout(() => {
  fail(new Error('hard timeout after ' + timeoutMs + ' ms (the SDK never answered; e.g. a response with a wrong $rid, a missing PUBACK/SUBACK/UNSUBACK, or no twin/method answer)'), 124);
}, timeoutMs);

function env(name) {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

function splitHostPort(s) {
  // "host", "host:port", "[v6]:port"
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s) || /^([^:]+)(?::(\d+))?$/.exec(s);
  if (!m) return { host: s, port: undefined };
  return { host: m[1], port: m[2] ? Number(m[2]) : undefined };
}

// Poll a predicate (used to wait for a subscription's SUBACK); resolves false on timeout.
function waitFor(pred, ms) {
  return new Promise((resolve) => {
    const start = Date.now();
    const tick = () => {
      let ok = false;
      try { ok = !!pred(); } catch (_e) { ok = false; }
      if (ok) return resolve(true);
      if (Date.now() - start > ms) return resolve(false);
      setTimeout(tick, 20);
    };
    tick();
  });
}

async function main() {
  const dpsHostRaw = env('ZT_DPS_HOST');
  const idScope = env('ZT_ID_SCOPE');
  const registrationId = env('ZT_REGISTRATION_ID');
  const transportName = (env('ZT_TRANSPORT') || 'mqtt').toLowerCase();
  if (!dpsHostRaw) return configError('ZT_DPS_HOST is required');
  if (!idScope) return configError('ZT_ID_SCOPE is required');
  if (!registrationId) return configError('ZT_REGISTRATION_ID is required');
  if (transportName !== 'mqtt' && transportName !== 'http') return configError('ZT_TRANSPORT must be mqtt or http');

  const hp = splitHostPort(dpsHostRaw);
  const dpsPort = env('ZT_DPS_PORT') ? Number(env('ZT_DPS_PORT')) : hp.port;
  if (env('ZT_DPS_PORT') && !(dpsPort > 0 && dpsPort < 65536)) return configError('ZT_DPS_PORT is not a port: ' + env('ZT_DPS_PORT'));

  // ---- credentials ----
  let symmetricKey = env('ZT_SYMMETRIC_KEY');
  const groupKey = env('ZT_GROUP_KEY');
  let x509;
  if (!symmetricKey && groupKey) {
    // The SDK does not derive group keys; applications do (documented DPS recipe).
    symmetricKey = crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
  }
  if (!symmetricKey) {
    const certFile = env('ZT_CERT_FILE');
    const keyFile = env('ZT_KEY_FILE');
    if (!certFile || !keyFile) return configError('set ZT_SYMMETRIC_KEY, ZT_GROUP_KEY, or ZT_CERT_FILE and ZT_KEY_FILE');
    x509 = { cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') };
  }

  // ---- DPS transport ----
  let provTransport;
  let provisioningHost;
  if (transportName === 'mqtt') {
    // The MQTT transport dials 'mqtts://' + provisioningHost (provisioning-device-mqtt dist/mqtt.js:271),
    // and mqtt.js takes the port from that URL (mqtt/lib/connect/index.js:64-69, default 8883 in tls.js:7).
    provisioningHost = dpsPort ? (hp.host.includes(':') ? '[' + hp.host + ']' : hp.host) + ':' + dpsPort : hp.host;
    provTransport = new ProvMqtt();
  } else {
    // The HTTP transport passes provisioningHost as https.request({host}) and never sets a port
    // (azure-iot-http-base dist/http.js:59-76), so "host:port" does not work (ENOTFOUND).
    // Least invasive fix: give the transport its own http-base instance (public constructor arg)
    // configured with the documented `http.agent` option, using an Agent whose defaultPort is ours.
    provisioningHost = hp.host;
    const provHttpDir = path.dirname(require.resolve('azure-iot-provisioning-device-http/package.json'));
    const { Http: HttpBase } = require(require.resolve('azure-iot-http-base', { paths: [provHttpDir] }));
    const base = new HttpBase();
    if (dpsPort) {
      const agent = new https.Agent({ keepAlive: false });
      agent.defaultPort = dpsPort;
      base.setOptions({ http: { agent: agent } });
    }
    provTransport = new ProvHttp(base);
  }

  const security = symmetricKey
    ? new SymmetricKeySecurityClient(registrationId, symmetricKey)
    : new X509Security(registrationId, x509);
  const provClient = ProvisioningDeviceClient.create(provisioningHost, idScope, provTransport, security);
  if (env('ZT_PAYLOAD')) {
    let payload;
    try { payload = JSON.parse(env('ZT_PAYLOAD')); } catch (e) { return configError('ZT_PAYLOAD is not JSON: ' + e.message); }
    provClient.setProvisioningPayload(payload);
  }

  currentStep = 'register';
  const reg = await provClient.register();
  out({ step: 'register', transport: transportName, dpsHost: provisioningHost, dpsPort: dpsPort || null, registrationId: registrationId, result: reg });
  if (!reg || !reg.assignedHub || !reg.deviceId) {
    throw new Error('registration result lacks assignedHub/deviceId: ' + JSON.stringify(reg));
  }
  if (env('ZT_SKIP_HUB')) {
    out({ step: 'done' });
    return;
  }

  // ---- IoT Hub over MQTT ----
  currentStep = 'hub_connect';
  const hubHost = reg.assignedHub; // used verbatim: dial target, username and SAS sr
  const gateway = env('ZT_HUB_ADDR');
  let client;
  if (symmetricKey) {
    let cs = 'HostName=' + hubHost + ';DeviceId=' + reg.deviceId + ';SharedAccessKey=' + symmetricKey;
    if (gateway) cs += ';GatewayHostName=' + gateway; // device-mqtt dist/mqtt.js:722 dials gatewayHostName
    client = Client.fromConnectionString(cs, HubMqtt);
  } else {
    const creds = { host: hubHost, deviceId: reg.deviceId, x509: x509 };
    if (gateway) creds.gatewayHostName = gateway;
    client = Client.fromAuthenticationProvider(new X509AuthenticationProvider(creds), HubMqtt);
  }
  let closing = false;
  client.on('error', (err) => fail(err, 1));
  client.on('disconnect', (res) => {
    if (!exiting && !closing) fail(new Error('hub disconnected unexpectedly: ' + ((res && res.reason && res.reason.message) || (res && res.message) || 'no reason')), 1);
  });

  await client.open();
  out({ step: 'hub_connected', host: hubHost, dial: gateway || hubHost, deviceId: reg.deviceId });

  const transport = client._transport; // read-only peek at subscription state (SDK keeps no public flag)
  let methodAnswered = () => {};
  const methodDone = new Promise((resolve) => { methodAnswered = resolve; });
  if (env('ZT_WAIT_METHOD')) {
    currentStep = 'method_subscribe';
    // Register early: the SUBSCRIBE goes out before the telemetry/twin traffic below.
    client.onDeviceMethod('reboot', (request, response) => {
      out({ step: 'method', name: request.methodName, requestId: request.requestId, payload: request.payload === undefined ? null : request.payload });
      response.send(200, { ok: true }, (err) => {
        if (err) return fail(err, 1);
        methodAnswered();
      });
    });
  }

  // Telemetry (QoS 1; sendEvent resolves on PUBACK).
  const n = env('ZT_MESSAGES') !== undefined ? Number(env('ZT_MESSAGES')) : 3;
  for (let i = 1; i <= n; i++) {
    currentStep = 'telemetry';
    const msg = new Message(JSON.stringify({ seq: i, temperature: 20 + i }));
    msg.messageId = 'zt-msg-' + i;
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    msg.properties.add('seq', String(i));
    msg.properties.add('source', 'zerotouch test');
    await client.sendEvent(msg);
    out({ step: 'telemetry', seq: i });
  }

  currentStep = 'twin_get';
  const twin = await client.getTwin();
  out({ step: 'twin', desired: twin.properties.desired, reported: stripFns(twin.properties.reported) });

  currentStep = 'twin_reported';
  const patch = { firmware: '1.2.3' };
  await new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve())));
  out({ step: 'reported', patch: patch });

  if (env('ZT_WAIT_DESIRED')) {
    currentStep = 'desired';
    const initialVersion = twin.properties.desired && twin.properties.desired.$version;
    const got = new Promise((resolve) => {
      twin.on('properties.desired', (delta) => {
        // The first event replays the current desired state; wait for a newer version.
        if (delta && delta.$version !== undefined && delta.$version !== initialVersion) resolve(delta);
      });
    });
    // twin.on() above triggers the SUBSCRIBE; this call joins the same topic state machine
    // (no second SUBSCRIBE) and returns once the SUBACK arrived.
    await new Promise((resolve, reject) => transport.enableTwinDesiredPropertiesUpdates((err) => (err ? reject(err) : resolve())));
    out({ step: 'desired_ready', confirmed: true });
    const delta = await got;
    out({ step: 'desired', patch: delta });
  }

  if (env('ZT_WAIT_C2D')) {
    currentStep = 'c2d';
    const got = new Promise((resolve) => {
      client.on('message', (m) => {
        const props = {};
        for (let i = 0; i < m.properties.count(); i++) {
          const p = m.properties.getItem(i);
          props[p.key] = p.value;
        }
        resolve({ data: m.data ? m.data.toString() : null, messageId: m.messageId, correlationId: m.correlationId, properties: props });
      });
    });
    const ok = await waitFor(() => transport._topics && transport._topics.message && transport._topics.message.subscribed, 10000);
    out({ step: 'c2d_ready', confirmed: ok });
    out(Object.assign({ step: 'c2d' }, await got));
  }

  if (env('ZT_WAIT_METHOD')) {
    currentStep = 'method_wait';
    const ok = await waitFor(() => transport._topics && transport._topics.method && transport._topics.method.subscribed, 10000);
    out({ step: 'method_ready', confirmed: ok });
    await methodDone;
  }

  currentStep = 'close';
  closing = true;
  await client.close();
  out({ step: 'done' });
}

function stripFns(o) {
  const r = {};
  for (const k of Object.keys(o || {})) if (typeof o[k] !== 'function') r[k] = o[k];
  return r;
}

main().then(() => {
  clearTimeout(hardTimer);
  process.exit(0);
}, (err) => fail(err, 1));
