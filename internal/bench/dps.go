package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/attest"
)

// Azure DPS registration over MQTT (the azure-dps dialect), as the Azure
// IoT device SDKs run it: CONNECT over TLS with user name
// "<idScope>/registrations/<registrationId>/api-version=…" and a SAS token
// as password, SUBSCRIBE $dps/registrations/res/#, PUBLISH the
// registration, get 202 "assigning" with an operation id and a
// retry-after, wait it, poll the operation, get 200 "assigned".

// DPS topics and parameters.
const (
	dpsAPIVersion     = "2019-03-31"
	iotHubAPIVersion  = "2021-04-12"
	dpsClientVersion  = "zerotouch-bench"
	dpsResponseFilter = "$dps/registrations/res/#"
	dpsResponsePrefix = "$dps/registrations/res/"
	dpsRegisterTopic  = "$dps/registrations/PUT/iotdps-register/?$rid="
	dpsPollTopic      = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="
	// dpsTokenTTL is how long a device's SAS token is valid.
	dpsTokenTTL = time.Hour
	// dpsDefaultRetryAfter is the wait when an "assigning" answer names
	// none: the device SDKs' default polling interval.
	dpsDefaultRetryAfter = 2 * time.Second
	// dpsMaxPolls bounds the polls of one registration still "assigning".
	dpsMaxPolls = 10
)

// Phases of the azure-dps exchange.
const (
	// PhaseConnect (telemetry.go) is, for azure-dps, TCP + TLS handshake
	// (with the device's certificate, X.509) + CONNECT (with the SAS
	// token, symmetric key), until the CONNACK.
	PhaseRegister Phase = "register" // SUBSCRIBE + registration, until 202 assigning
	PhaseAssigned Phase = "assigned" // from the first poll (after the retry-after) until 200 assigned
)

// dpsFlow is an Azure device's first boot: its DPS registration, then, as
// a real device goes on, a connection to the assigned hub as the assigned
// device id with the same credentials (user name
// "<hub>/<deviceId>/?api-version=…"; a device SAS token of its key, or its
// certificate) and its first device-to-cloud message at QoS 1 until the
// PUBACK. Both credential types run it: they differ only in their
// dpsIdentity.
var dpsFlow = flow{
	phases: []Phase{PhaseConnect, PhaseRegister, PhaseAssigned, PhaseDeviceConnect, PhaseTelemetryAck},
	span:   PhaseProvisioning, spanOf: 3,
	run: dpsDevice,
}

// dpsRegistrationFlow is dpsFlow without the hub (RegistrationOnly).
var dpsRegistrationFlow = flow{
	phases: []Phase{PhaseConnect, PhaseRegister, PhaseAssigned},
	run:    dpsDevice,
}

// dpsIdentity is how a device proves who it is, to DPS and then to its
// hub: a SAS token as CONNECT password (symmetric key), or a client
// certificate in the TLS handshake and no password (X.509).
type dpsIdentity struct {
	regID string
	// tls is what the device dials with (the storm's, or a copy holding
	// the device's certificate).
	tls *tls.Config
	// password is the registration's CONNECT password ("": none).
	password string
	// hubPassword makes the hub CONNECT's password (nil: none).
	hubPassword func(hub, deviceID string) (string, error)
}

// dpsIdentity makes device i's identity of the storm's credential type,
// before its clock starts.
func (s *storm) dpsIdentity(i int) (*dpsIdentity, error) {
	regID := strings.ToLower(s.deviceName(i))
	if s.cfg.Credentials == CredentialsX509 {
		cfg := s.tlsCfg.Clone()
		cfg.Certificates = []tls.Certificate{s.certs[i]}
		return &dpsIdentity{regID: regID, tls: cfg}, nil
	}
	key, err := attest.DeriveDeviceKey(s.cfg.GroupKey, regID)
	if err != nil {
		return nil, &Error{Kind: KindLocal, Phase: PhaseConnect, Err: fmt.Errorf("derive the device key: %w", err)}
	}
	token, err := attest.Sign(attest.RegistrationResource(s.cfg.IDScope, regID), attest.RegistrationKeyName, key, time.Now().Add(dpsTokenTTL))
	if err != nil {
		return nil, &Error{Kind: KindLocal, Phase: PhaseConnect, Err: fmt.Errorf("sign the SAS token: %w", err)}
	}
	return &dpsIdentity{regID: regID, tls: s.tlsCfg, password: token, hubPassword: func(hub, deviceID string) (string, error) {
		return attest.Sign(attest.URLEncode(attest.DeviceResource(hub, deviceID)), "", key, time.Now().Add(dpsTokenTTL))
	}}, nil
}

// dpsAnswer is a DPS answer: the status and retry-after of its topic and
// its body.
type dpsAnswer struct {
	status     int
	retryAfter time.Duration // -1: none given
	op         struct {
		OperationID       string `json:"operationId"`
		Status            string `json:"status"`
		RegistrationState *struct {
			AssignedHub  string `json:"assignedHub"`
			DeviceID     string `json:"deviceId"`
			Status       string `json:"status"`
			ErrorCode    int    `json:"errorCode"`
			ErrorMessage string `json:"errorMessage"`
		} `json:"registrationState"`
		// An error body instead.
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	raw []byte
}

// refusal is an answer that is not what the exchange expects, as a
// KindProvision error of phase.
func (a *dpsAnswer) refusal(phase Phase, want string) *Error {
	msg := a.op.Message
	if rs := a.op.RegistrationState; msg == "" && rs != nil {
		msg = rs.ErrorMessage
	}
	code := a.op.ErrorCode
	if rs := a.op.RegistrationState; code == 0 && rs != nil {
		code = rs.ErrorCode
	}
	detail := fmt.Sprintf("%d", a.status)
	if a.op.Status != "" {
		detail += " " + a.op.Status
	}
	if code != 0 {
		detail += fmt.Sprintf(" (errorCode %d)", code)
	}
	if msg == "" {
		msg = fmt.Sprintf("%.200s", a.raw)
	}
	return &Error{Kind: KindProvision, Phase: phase, Err: fmt.Errorf("%s instead of %s: %s", detail, want, msg)}
}

// dpsDevice is one device's DPS registration: connect over TLS,
// register, wait the retry-after (unless DPSPollNow), poll until assigned;
// then, unless RegistrationOnly, its hub (dpsHub).
func dpsDevice(ctx context.Context, s *storm, i int, rec *record) (*mqttConn, error) {
	id, err := s.dpsIdentity(i)
	if err != nil {
		return nil, err
	}
	regID := id.regID
	user := s.cfg.IDScope + "/registrations/" + regID + "/api-version=" + dpsAPIVersion + "&ClientVersion=" + dpsClientVersion

	t0 := time.Now()
	c, err := dialMQTTS(s.addr, s.source(i), id.tls, s.cfg.Timeout)
	if err != nil {
		return nil, classify(err, PhaseConnect, true)
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	defer c.close(true)
	c.setDeadline(time.Now().Add(s.cfg.Timeout))
	if err := c.connectWith(regID, user, id.password, provisionKeepalive); err != nil {
		return nil, classify(err, PhaseConnect, false)
	}
	t1 := time.Now()
	rec.lat[0] = t1.Sub(t0)

	c.setDeadline(time.Now().Add(s.cfg.Timeout))
	if err := c.subscribe(dpsResponseFilter, 1); err != nil {
		return nil, classify(err, PhaseRegister, false)
	}
	body, _ := json.Marshal(map[string]string{"registrationId": regID})
	a, err := c.dpsRequest(dpsRegisterTopic, "1", body, PhaseRegister)
	if err != nil {
		return nil, err
	}
	rec.lat[1] = time.Since(t1)
	if a.status == 200 && a.op.Status == "assigned" {
		// Assigned at once (DPS may answer so): no poll to measure.
		if err := a.assigned(PhaseRegister); err != nil {
			return nil, err
		}
		if s.cfg.RegistrationOnly {
			return nil, nil
		}
		c.close(true)
		return s.dpsHub(ctx, i, rec, id, a.op.RegistrationState.AssignedHub, a.op.RegistrationState.DeviceID)
	}
	if a.status != 202 || a.op.Status != "assigning" || a.op.OperationID == "" {
		return nil, a.refusal(PhaseRegister, "202 assigning")
	}

	var t2 time.Time
	for poll := 1; ; poll++ {
		if err := s.dpsWait(ctx, a.retryAfter); err != nil {
			return nil, classify(err, PhaseAssigned, false)
		}
		if poll == 1 {
			t2 = time.Now()
		}
		c.setDeadline(time.Now().Add(s.cfg.Timeout))
		a, err = c.dpsRequest(dpsPollTopic, strconv.Itoa(poll+1)+"&operationId="+url.QueryEscape(a.op.OperationID), []byte(" "), PhaseAssigned)
		if err != nil {
			return nil, err
		}
		if a.status == 202 && a.op.Status == "assigning" && poll < dpsMaxPolls {
			continue
		}
		if a.status != 200 || a.op.Status != "assigned" {
			return nil, a.refusal(PhaseAssigned, "200 assigned")
		}
		if err := a.assigned(PhaseAssigned); err != nil {
			return nil, err
		}
		rec.lat[2] = time.Since(t2)
		if s.cfg.RegistrationOnly {
			return nil, nil
		}
		c.close(true)
		return s.dpsHub(ctx, i, rec, id, a.op.RegistrationState.AssignedHub, a.op.RegistrationState.DeviceID)
	}
}

// dpsHub is the device on its hub: it connects with a SAS token of its key
// (or its certificate) and sends its first message. The hub is dialled at
// the MQTTS address the bench was given: the assigned hub's name is used
// verbatim in the user name and the token, as the SDKs do, but need not
// resolve here.
func (s *storm) dpsHub(ctx context.Context, i int, rec *record, id *dpsIdentity, hub, deviceID string) (*mqttConn, error) {
	var token string
	if id.hubPassword != nil {
		var err error
		if token, err = id.hubPassword(hub, deviceID); err != nil {
			return nil, &Error{Kind: KindLocal, Phase: PhaseDeviceConnect, Err: fmt.Errorf("sign the device token: %w", err)}
		}
	}
	t3 := time.Now()
	c, err := dialMQTTS(s.addr, s.source(i), id.tls, s.cfg.Timeout)
	if err != nil {
		return nil, classify(err, PhaseDeviceConnect, true)
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	ok := false
	defer func() {
		if !ok {
			c.close(false)
		}
	}()
	c.setDeadline(time.Now().Add(s.cfg.Timeout))
	if err := c.connectWith(deviceID, hub+"/"+deviceID+"/?api-version="+iotHubAPIVersion+"&DeviceClientType="+dpsClientVersion, token, deviceKeepalive); err != nil {
		return nil, classify(err, PhaseDeviceConnect, false)
	}
	t4 := time.Now()
	rec.lat[3] = t4.Sub(t3)
	c.setDeadline(time.Now().Add(s.cfg.Timeout))
	if err := c.firstTelemetry("devices/"+deviceID+"/messages/events/", []byte(tbFirstTelemetry)); err != nil {
		return nil, err
	}
	rec.lat[4] = time.Since(t4)
	ok = true
	return s.settle(c)
}

// assigned checks that an "assigned" answer names the hub and the device.
// It returns error, not *Error: a nil *Error in an error is not nil.
func (a *dpsAnswer) assigned(phase Phase) error {
	rs := a.op.RegistrationState
	if rs == nil || rs.AssignedHub == "" || rs.DeviceID == "" {
		return &Error{Kind: KindProtocol, Phase: phase, Err: fmt.Errorf("assigned without a hub and device id: %.200s", a.raw)}
	}
	return nil
}

// dpsWait waits before a poll: the retry-after the server gave (the SDKs'
// default when none), or not at all with DPSPollNow.
func (s *storm) dpsWait(ctx context.Context, retryAfter time.Duration) error {
	if retryAfter >= 0 {
		for ms := retryAfter.Milliseconds(); ; {
			old := s.retryAfter.Load()
			if ms <= old || s.retryAfter.CompareAndSwap(old, ms) {
				break
			}
		}
	} else {
		retryAfter = dpsDefaultRetryAfter
	}
	if s.cfg.DPSPollNow || retryAfter == 0 {
		return nil
	}
	t := time.NewTimer(retryAfter)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dpsRequest publishes body at QoS 1 on topic+rid (rid may carry more
// parameters after it) and waits for the answer with that $rid.
func (c *mqttConn) dpsRequest(topic, rid string, body []byte, phase Phase) (*dpsAnswer, error) {
	pub, id := c.publish(topic+rid, 1, body)
	if err := c.send(pub); err != nil {
		return nil, classify(err, phase, false)
	}
	rid, _, _ = strings.Cut(rid, "&")
	for {
		pk, err := c.read()
		if err != nil {
			return nil, classify(err, phase, false)
		}
		if pk.FixedHeader.Type != packets.Publish {
			if pk.FixedHeader.Type == packets.Puback && pk.PacketID == id && pk.ReasonCode >= 0x80 {
				return nil, &Error{Kind: KindRefused, Phase: phase, Err: fmt.Errorf("request refused (PUBACK %#x)", pk.ReasonCode)}
			}
			continue
		}
		c.ack(pk)
		a, ok, err := parseDPSAnswer(pk.TopicName, pk.Payload, rid)
		if err != nil {
			return nil, &Error{Kind: KindProtocol, Phase: phase, Err: err}
		}
		if ok {
			return a, nil
		}
	}
}

// parseDPSAnswer parses an answer published on topic
// "$dps/registrations/res/<status>/?$rid=<rid>[&retry-after=<s>]"; ok is
// false for an answer to another request.
func parseDPSAnswer(topic string, payload []byte, rid string) (*dpsAnswer, bool, error) {
	rest, ok := strings.CutPrefix(topic, dpsResponsePrefix)
	status, query, ok2 := strings.Cut(rest, "/?")
	if !ok || !ok2 {
		return nil, false, fmt.Errorf("answer on unexpected topic %.200q", topic)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, false, fmt.Errorf("answer topic %.200q: %w", topic, err)
	}
	if q.Get("$rid") != rid {
		return nil, false, nil
	}
	a := &dpsAnswer{retryAfter: -1, raw: payload}
	if a.status, err = strconv.Atoi(status); err != nil {
		return nil, false, fmt.Errorf("answer topic %.200q: status %q", topic, status)
	}
	if ra := q.Get("retry-after"); ra != "" {
		n, err := strconv.Atoi(ra)
		if err != nil || n < 0 {
			return nil, false, fmt.Errorf("answer topic %.200q: retry-after %q", topic, ra)
		}
		a.retryAfter = time.Duration(n) * time.Second
	}
	if err := json.Unmarshal(payload, &a.op); err != nil {
		return nil, false, fmt.Errorf("answer %.200q: %w", payload, err)
	}
	return a, true, nil
}
