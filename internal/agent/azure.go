package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/attest"
)

// The Azure dialect: registration with DPS over MQTT, then the IoT Hub
// device protocol, as the Azure IoT device SDKs speak them.

// Azure protocol names and versions.
const (
	dpsAPIVersion = "2019-03-31"
	hubAPIVersion = "2021-04-12"
	// azureClientType is the DPS ClientVersion and the hub's
	// DeviceClientType.
	azureClientType = "zerotouch-agent"

	dpsResponseFilter = "$dps/registrations/res/#"
	dpsResponsePrefix = "$dps/registrations/res/"
	dpsRegisterTopic  = "$dps/registrations/PUT/iotdps-register/?$rid="
	dpsPollTopic      = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="

	twinResFilter      = "$iothub/twin/res/#"
	twinResPrefix      = "$iothub/twin/res/"
	twinGetTopic       = "$iothub/twin/GET/?$rid="
	twinReportedTopic  = "$iothub/twin/PATCH/properties/reported/?$rid="
	twinDesiredFilter  = "$iothub/twin/PATCH/properties/desired/#"
	twinDesiredPrefix  = "$iothub/twin/PATCH/properties/desired/"
	methodsFilter      = "$iothub/methods/POST/#"
	methodsPostPrefix  = "$iothub/methods/POST/"
	methodsResPrefix   = "$iothub/methods/res/"
	eventsProperties   = "%24.ct=application%2Fjson&%24.ce=utf-8"
	deviceboundSegment = "/messages/devicebound/"
)

// DefaultTokenLifetime is how long a hub SAS token is valid, as the SDKs
// make them.
const DefaultTokenLifetime = time.Hour

// DPS timings: the poll delay when an answer gives no retry-after (the
// SDKs' 2 s), the longest retry-after honoured, and how many busy
// answers (429, 5xx) or polls one registration session takes before it
// gives up and the agent reconnects with backoff.
const (
	dpsDefaultRetryAfter = 2 * time.Second
	dpsMaxRetryAfter     = 5 * time.Minute
	dpsMaxBusy           = 8
	dpsMaxPolls          = 60
)

// errRenewToken ends a hub session whose SAS token is about to expire:
// the agent reconnects at once with a fresh one.
var errRenewToken = errors.New("the SAS token is due for renewal")

// errStop marks a local failure (a file gone, a state file that cannot
// be used) that retrying will not mend.
var errStop = errors.New("cannot continue")

// azureTLS is the base TLS configuration of an Azure device: the
// configured CAs, and its certificate for X.509. The server name is set
// per connection (tlsFor).
func azureTLS(cfg *Config) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pool, err := readCAFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		t.RootCAs = pool
	}
	if d := cfg.DPS; d != nil && d.Certificate != "" {
		cert, err := tls.LoadX509KeyPair(d.Certificate, d.Key)
		if err != nil {
			return nil, fmt.Errorf("dps certificate and key: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// tlsFor is the TLS configuration of a connection to addr (host:port):
// the server's certificate must name host.
func (a *Agent) tlsFor(addr string, withCert bool) *tls.Config {
	t := a.tls.Clone()
	t.ServerName, _, _ = net.SplitHostPort(addr)
	if !withCert {
		t.Certificates = nil
	}
	return t
}

// deviceKey is the device's symmetric key: the configured one, or the one
// derived from the group key; "" for an X.509 device.
func (a *Agent) deviceKey() (string, error) {
	d := a.cfg.DPS
	switch {
	case d.SymmetricKey != "":
		return d.SymmetricKey, nil
	case d.GroupKey != "":
		return attest.DeriveDeviceKey(d.GroupKey, d.RegistrationID)
	}
	return "", nil
}

// dpsAnswer is one answer of DPS to a request.
type dpsAnswer struct {
	status     int
	retryAfter time.Duration
	hasRetry   bool
	body       []byte
}

// dpsOperation is DPS's RegistrationOperationStatus.
type dpsOperation struct {
	OperationID       string `json:"operationId"`
	Status            string `json:"status"`
	RegistrationState *struct {
		AssignedHub  string `json:"assignedHub"`
		DeviceID     string `json:"deviceId"`
		Status       string `json:"status"`
		Substatus    string `json:"substatus"`
		ErrorCode    int    `json:"errorCode"`
		ErrorMessage string `json:"errorMessage"`
	} `json:"registrationState"`
}

// registerDPS registers the device with DPS over MQTTS: it connects as
// the registration, subscribes to the answers, sends the registration,
// waits the retry-after of the "assigning" answer, polls the operation
// until it is "assigned" and returns the state to keep. Busy answers (429,
// 5xx) are retried after their retry-after; a refusal (4xx, status
// disabled or failed) is a ProvisionError.
func (a *Agent) registerDPS(ctx context.Context) (*State, error) {
	d := a.cfg.DPS
	addr, err := hostPort(d.Host)
	if err != nil {
		return nil, fmt.Errorf("%w: dps.host: %v", errStop, err)
	}
	key, err := a.deviceKey()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errStop, err)
	}
	opts := a.clientOptionsFor(addr, true, d.RegistrationID)
	opts.SetUsername(d.IDScope + "/registrations/" + d.RegistrationID + "/api-version=" + dpsAPIVersion +
		"&ClientVersion=" + attest.URLEncode(azureClientType+"/"+a.version()))
	if key != "" {
		tok, err := attest.Sign(attest.RegistrationResource(d.IDScope, d.RegistrationID), attest.RegistrationKeyName, key, time.Now().Add(a.opts.TokenLifetime))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errStop, err)
		}
		opts.SetPassword(tok)
	}
	opts.SetTLSConfig(a.tlsFor(addr, key == ""))
	c := mqtt.NewClient(opts)
	if err := wait(ctx, c.Connect(), a.opts.ConnectTimeout); err != nil {
		kind := CredentialsSymmetricKey
		if key == "" {
			kind = CredentialsX509
		}
		if a.refusedCredentials(&State{CredentialsType: kind}, err) {
			return nil, &ProvisionError{Status: "401", ErrorMsg: err.Error(), Reason: dpsHint(401)}
		}
		return nil, fmt.Errorf("DPS connection to %s: %w", addr, err)
	}
	defer c.Disconnect(250)
	answers := make(chan mqtt.Message, 8)
	sub := c.Subscribe(dpsResponseFilter, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case answers <- m:
		default:
		}
	})
	if err := wait(ctx, sub, a.opts.ConnectTimeout); err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", dpsResponseFilter, err)
	}
	if granted := sub.(*mqtt.SubscribeToken).Result()[dpsResponseFilter]; granted >= 0x80 {
		return nil, fmt.Errorf("DPS refused the subscription to %s", dpsResponseFilter)
	}

	register, err := json.Marshal(struct {
		RegistrationID string         `json:"registrationId"`
		Payload        map[string]any `json:"payload,omitempty"`
	}{d.RegistrationID, d.Payload})
	if err != nil {
		return nil, fmt.Errorf("%w: dps.payload: %v", errStop, err)
	}
	b := &backoff{base: a.opts.BackoffBase, max: a.opts.BackoffMax}
	var rid, busy, polls int
	operationID := ""
	for {
		rid++
		topic, body := dpsRegisterTopic+strconv.Itoa(rid), register
		if operationID != "" {
			topic, body = dpsPollTopic+strconv.Itoa(rid)+"&operationId="+url.QueryEscape(operationID), []byte(" ")
		}
		if err := wait(ctx, c.Publish(topic, 1, false, body), a.opts.ConnectTimeout); err != nil {
			return nil, fmt.Errorf("publish to DPS: %w", err)
		}
		ans, err := a.dpsAnswer(ctx, answers, strconv.Itoa(rid))
		if err != nil {
			return nil, err
		}
		if ans.status == 429 || ans.status >= 500 {
			if busy++; busy > dpsMaxBusy {
				return nil, fmt.Errorf("DPS answered %d %d times in a row: %s", ans.status, busy, clip(ans.body))
			}
			delay := b.next()
			if ans.hasRetry {
				delay = ans.retryAfter
			}
			a.log.Warn("DPS is busy; retrying", "status", ans.status, "in", delay)
			if !sleep(ctx, delay) {
				return nil, ctx.Err()
			}
			continue // the same request again
		}
		busy = 0
		if ans.status < 200 || ans.status >= 300 {
			var e struct {
				ErrorCode int    `json:"errorCode"`
				Message   string `json:"message"`
			}
			_ = json.Unmarshal(ans.body, &e)
			return nil, &ProvisionError{Status: strconv.Itoa(ans.status), ErrorMsg: cmp.Or(e.Message, clip(ans.body)),
				Reason: dpsHint(ans.status) + errorCodeNote(e.ErrorCode)}
		}
		var op dpsOperation
		if err := json.Unmarshal(ans.body, &op); err != nil {
			return nil, fmt.Errorf("DPS answer is not an operation: %s", clip(ans.body))
		}
		delay := dpsDefaultRetryAfter
		if ans.hasRetry {
			delay = ans.retryAfter
		}
		switch strings.ToLower(op.Status) {
		case "assigned":
			return a.dpsState(&op, key)
		case "assigning":
			if op.OperationID == "" {
				return nil, fmt.Errorf("DPS answered assigning without an operationId: %s", clip(ans.body))
			}
			operationID = op.OperationID
		case "registering":
			operationID = ""
		case "disabled", "failed":
			pe := &ProvisionError{Status: strings.ToLower(op.Status),
				Reason: "DPS could not assign the device to a hub: ask the operator to check the enrollment's hubs and allocation policy"}
			if pe.Status == "disabled" {
				pe.Reason = "ask the operator to enable it: zerotouch enrollment enable " + d.RegistrationID +
					", or zerotouch device enable ID for a disabled device"
			}
			if rs := op.RegistrationState; rs != nil {
				pe.ErrorMsg = rs.ErrorMessage
			}
			return nil, pe
		default:
			return nil, fmt.Errorf("DPS answered an unknown status %q: %s", op.Status, clip(ans.body))
		}
		if polls++; polls > dpsMaxPolls {
			return nil, fmt.Errorf("DPS did not finish the registration after %d polls", dpsMaxPolls)
		}
		a.log.Debug("DPS registration in progress", "status", op.Status, "operationId", op.OperationID, "poll in", delay)
		if !sleep(ctx, delay) {
			return nil, ctx.Err()
		}
	}
}

// dpsAnswer waits for the answer to request rid; answers to other
// requests (a late answer to an earlier one) are skipped.
func (a *Agent) dpsAnswer(ctx context.Context, answers <-chan mqtt.Message, rid string) (dpsAnswer, error) {
	timer := time.NewTimer(a.opts.ProvisionTimeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return dpsAnswer{}, ctx.Err()
		case <-timer.C:
			return dpsAnswer{}, fmt.Errorf("no DPS answer within %s", a.opts.ProvisionTimeout)
		case m := <-answers:
			rest, ok := strings.CutPrefix(m.Topic(), dpsResponsePrefix)
			status, query, ok2 := strings.Cut(rest, "/?")
			q, err := url.ParseQuery(query)
			if !ok || !ok2 || err != nil || q.Get("$rid") != rid {
				continue
			}
			ans := dpsAnswer{body: m.Payload()}
			if ans.status, err = strconv.Atoi(status); err != nil {
				return dpsAnswer{}, fmt.Errorf("DPS answered on %q: no status", m.Topic())
			}
			if v := q.Get("retry-after"); v != "" {
				if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 && !math.IsInf(s, 0) {
					ans.retryAfter = min(time.Duration(s*float64(time.Second)), dpsMaxRetryAfter)
					ans.hasRetry = true
				}
			}
			return ans, nil
		}
	}
}

// dpsState is the state kept after an assignment.
func (a *Agent) dpsState(op *dpsOperation, key string) (*State, error) {
	rs := op.RegistrationState
	if rs == nil || rs.AssignedHub == "" || rs.DeviceID == "" {
		return nil, fmt.Errorf("DPS answered assigned without an assigned hub and device id")
	}
	if _, err := hostPort(rs.AssignedHub); err != nil || strings.Contains(rs.DeviceID, "/") {
		return nil, fmt.Errorf("DPS assigned an unusable hub %q or device id %q", rs.AssignedHub, rs.DeviceID)
	}
	st := &State{
		Dialect:       DialectAzureDPS,
		Server:        a.cfg.DPS.Host,
		DeviceName:    a.cfg.DPS.RegistrationID,
		AssignedHub:   rs.AssignedHub,
		DeviceID:      rs.DeviceID,
		OperationID:   op.OperationID,
		ProvisionedAt: time.Now().UTC(),
	}
	if key != "" {
		st.CredentialsType, st.SymmetricKey = CredentialsSymmetricKey, key
		return st, nil
	}
	st.CredentialsType = CredentialsX509
	var err error
	if st.CertFile, err = filepath.Abs(a.cfg.DPS.Certificate); err != nil {
		return nil, err
	}
	if st.KeyFile, err = filepath.Abs(a.cfg.DPS.Key); err != nil {
		return nil, err
	}
	return st, nil
}

// dpsHint says what to do about a DPS refusal with an HTTP-style status.
func dpsHint(status int) string {
	switch status {
	case 400:
		return "DPS found the request malformed: check dps.registrationId and dps.payload"
	case 401, 403:
		return "DPS refused the credential: check dps.idScope, dps.registrationId and the key or certificate with the operator"
	case 404:
		return "DPS knows no such registration: check dps.idScope and dps.registrationId with the operator"
	case 409:
		return "DPS refused to register the device again (its device id is taken, or the enrollment does not allow it)"
	}
	return "DPS refused the registration"
}

func errorCodeNote(code int) string {
	if code == 0 {
		return ""
	}
	return fmt.Sprintf("; errorCode %d", code)
}

// azureRefusedAgain is the error of a device whose hub credentials were
// refused and whose new registration was refused too.
func (a *Agent) azureRefusedAgain(connErr, provErr error) error {
	hint := "Ask the operator to check the device's enrollment; then start the agent again"
	var pe *ProvisionError
	if errors.As(provErr, &pe) && pe.Status == "disabled" {
		hint = "Once the operator has enabled it, start the agent again"
	}
	return fmt.Errorf("the hub refused the stored credentials of device %q (%v) and DPS refused to register it again: %w.\n"+
		"%s (the state file %s is kept)", a.cfg.Device, connErr, provErr, hint, a.cfg.StateFile)
}

// azureConnect connects to the assigned hub as the device: client id the
// device id, the hub's user name, and a fresh SAS token for the device
// (or its certificate).
func (a *Agent) azureConnect(ctx context.Context, st *State) (mqtt.Client, <-chan error, error) {
	addr, err := hostPort(st.AssignedHub)
	if err != nil || st.DeviceID == "" {
		return nil, nil, fmt.Errorf("%w: the state file %s holds no usable hub and device id: move it away to register again", errStop, a.cfg.StateFile)
	}
	opts := a.clientOptionsFor(addr, true, st.DeviceID)
	opts.SetUsername(st.AssignedHub + "/" + st.DeviceID + "/?api-version=" + hubAPIVersion + "&DeviceClientType=" + azureClientType)
	t := a.tlsFor(addr, false)
	switch st.CredentialsType {
	case CredentialsSymmetricKey:
		tok, err := attest.Sign(attest.URLEncode(attest.DeviceResource(st.AssignedHub, st.DeviceID)), "", st.SymmetricKey, time.Now().Add(a.opts.TokenLifetime))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: the state file's device key: %v", errStop, err)
		}
		opts.SetPassword(tok)
	case CredentialsX509:
		// Read at each connection: a certificate renewed on disk is used.
		cert, err := a.clientCertificate(st)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: the device certificate and key named in the state file: %v", errStop, err)
		}
		t.Certificates = []tls.Certificate{cert}
	default:
		return nil, nil, fmt.Errorf("%w: the state file %s holds credentials of type %q, not an Azure device's: move it away to register again",
			errStop, a.cfg.StateFile, st.CredentialsType)
	}
	opts.SetTLSConfig(t)
	return a.open(ctx, opts)
}

// azureSession is one hub connection's work: subscriptions, the twin at
// connect (its desired properties to the attribute command), the host's
// facts as reported properties, telemetry at the interval, desired
// property updates, direct methods and cloud-to-device messages. It
// returns when the connection is lost, a publish is not acknowledged,
// the SAS token is due for renewal (errRenewToken), or ctx ends.
func (a *Agent) azureSession(ctx context.Context, c mqtt.Client, st *State, lost <-chan error, once bool) error {
	id := st.DeviceID
	events := "devices/" + id + "/messages/events/" + eventsProperties
	if once {
		return a.publishTelemetry(ctx, c, events)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	attrs := make(chan []byte, 16)
	methods := make(chan mqtt.Message, 16)
	messages := make(chan mqtt.Message, 16)
	worker := func(n int, fn func()) {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fn()
			}()
		}
	}
	worker(1, func() { // in order: desired properties are patches
		for {
			select {
			case <-ctx.Done():
				return
			case b := <-attrs:
				a.applyAttributes(ctx, b)
			}
		}
	})
	worker(2, func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-methods:
				a.answerMethod(ctx, c, m)
			}
		}
	})
	worker(1, func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-messages:
				a.handleMessage(ctx, id, m)
			}
		}
	})

	var rids atomic.Int64
	getRID := strconv.FormatInt(rids.Add(1), 10)
	c2d := "devices/" + id + deviceboundSegment
	subs := map[string]byte{twinResFilter: 0, twinDesiredFilter: 0, methodsFilter: 0, c2d + "#": 1}
	tok := c.SubscribeMultiple(subs, func(_ mqtt.Client, m mqtt.Message) {
		switch t := m.Topic(); {
		case strings.HasPrefix(t, twinResPrefix):
			status, rid := azureStatusRID(strings.TrimPrefix(t, twinResPrefix))
			switch {
			case rid == getRID && status == 200:
				var twin struct {
					Desired map[string]json.RawMessage `json:"desired"`
				}
				if err := json.Unmarshal(m.Payload(), &twin); err != nil {
					a.log.Warn("twin is not JSON", "err", err)
					return
				}
				if hasProperties(twin.Desired) {
					b, _ := json.Marshal(twin.Desired)
					a.queue(attrs, b, "desired properties")
				}
			case status >= 300 || status == 0:
				a.log.Warn("twin request refused by the hub", "status", status, "rid", rid, "body", clip(m.Payload()))
			}
		case strings.HasPrefix(t, twinDesiredPrefix):
			a.queue(attrs, m.Payload(), "desired properties update")
		case strings.HasPrefix(t, methodsPostPrefix):
			select {
			case methods <- m:
			default:
				_, rid := methodNameRID(t)
				a.log.Warn("too many direct methods at once; refusing one", "rid", rid)
				c.Publish(methodsResPrefix+"429/?$rid="+rid, 1, false, errorJSON(errors.New("device busy: too many direct methods at once")))
			}
		case strings.HasPrefix(t, c2d) || t == strings.TrimSuffix(c2d, "/"):
			select {
			case messages <- m:
			default:
				a.log.Warn("the message handler is behind; dropping a cloud-to-device message")
			}
		}
	})
	if err := wait(ctx, tok, a.opts.ConnectTimeout); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for f, granted := range tok.(*mqtt.SubscribeToken).Result() {
		if granted >= 0x80 {
			a.log.Warn("the hub refused a subscription", "topic", f)
		}
	}
	// Updates sent while the device was away are not replayed, so it reads
	// the twin at every connection.
	if err := wait(ctx, c.Publish(twinGetTopic+getRID, 0, false, " "), a.opts.ConnectTimeout); err != nil {
		return fmt.Errorf("request the twin: %w", err)
	}
	facts, _ := json.Marshal(a.facts())
	if err := wait(ctx, c.Publish(twinReportedTopic+strconv.FormatInt(rids.Add(1), 10), 0, false, facts), a.opts.ConnectTimeout); err != nil {
		return fmt.Errorf("report properties: %w", err)
	}

	var renew <-chan time.Time
	if st.CredentialsType == CredentialsSymmetricKey {
		t := time.NewTimer(a.opts.TokenLifetime * 3 / 4)
		defer t.Stop()
		renew = t.C
	}
	return a.runSession(ctx, st, lost, renew, func() error { return a.publishTelemetry(ctx, c, events) })
}

// hasProperties reports whether a twin section holds properties besides
// its metadata ($version…).
func hasProperties(m map[string]json.RawMessage) bool {
	for k := range m {
		if !strings.HasPrefix(k, "$") {
			return true
		}
	}
	return false
}

// azureStatusRID parses "<status>/?$rid=<rid>[&…]".
func azureStatusRID(s string) (int, string) {
	st, query, _ := strings.Cut(s, "/")
	status, _ := strconv.Atoi(st)
	q, _ := url.ParseQuery(strings.TrimPrefix(query, "?"))
	return status, q.Get("$rid")
}

// methodNameRID parses "$iothub/methods/POST/<method>/?$rid=<rid>".
func methodNameRID(topic string) (method, rid string) {
	rest := strings.TrimPrefix(topic, methodsPostPrefix)
	name, query, _ := strings.Cut(rest, "?")
	name = strings.TrimSuffix(name, "/")
	if n, err := url.PathUnescape(name); err == nil {
		name = n
	}
	q, _ := url.ParseQuery(query)
	return name, q.Get("$rid")
}

// answerMethod runs the RPC command on {"method","params"} and answers
// the direct method: status 200 with the command's output, or 500 with
// {"error": …} when it fails.
func (a *Agent) answerMethod(ctx context.Context, c mqtt.Client, m mqtt.Message) {
	method, rid := methodNameRID(m.Topic())
	if rid == "" {
		a.log.Warn("direct method without a request id; ignored", "topic", m.Topic())
		return
	}
	params := json.RawMessage(strings.TrimSpace(string(m.Payload())))
	status, answer := 200, []byte(nil)
	switch {
	case len(params) > 0 && !json.Valid(params):
		status, answer = 400, errorJSON(errors.New("the method's payload is not JSON"))
	case a.cfg.Handlers.RPC == "":
		status, answer = 501, errorJSON(errors.New("no RPC handler configured on the device"))
	default:
		if len(params) == 0 {
			params = json.RawMessage("null")
		}
		in, _ := json.Marshal(struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}{method, params})
		out, err := runJSON(ctx, a.cfg.Handlers.RPC, in, a.cfg.Handlers.Timeout)
		if err != nil {
			a.log.Warn("RPC handler failed", "method", method, "rid", rid, "err", err)
			status, answer = 500, errorJSON(err)
		} else {
			answer = out
		}
	}
	topic := methodsResPrefix + strconv.Itoa(status) + "/?$rid=" + rid
	if err := wait(ctx, c.Publish(topic, 1, false, answer), a.opts.ConnectTimeout); err != nil {
		a.log.Warn("direct method answer not sent", "method", method, "rid", rid, "err", err)
		return
	}
	a.log.Info("direct method answered", "method", method, "rid", rid, "status", status)
}

// handleMessage logs a cloud-to-device message and gives it to the
// message command as {"properties":{…},"payload":…} (the payload as JSON
// when it is JSON, else as a string).
func (a *Agent) handleMessage(ctx context.Context, deviceID string, m mqtt.Message) {
	props := map[string]string{}
	bag := strings.TrimPrefix(m.Topic(), "devices/"+deviceID+deviceboundSegment)
	if bag != m.Topic() {
		if q, err := url.ParseQuery(bag); err == nil {
			for k, v := range q {
				props[k] = v[0]
			}
		}
	}
	a.log.Info("cloud-to-device message", "messageId", props["$.mid"], "bytes", len(m.Payload()))
	if a.cfg.Handlers.Message == "" {
		return
	}
	payload := json.RawMessage(strings.TrimSpace(string(m.Payload())))
	if len(payload) == 0 || !json.Valid(payload) {
		payload, _ = json.Marshal(string(m.Payload()))
	}
	in, _ := json.Marshal(struct {
		Properties map[string]string `json:"properties"`
		Payload    json.RawMessage   `json:"payload"`
	}{props, payload})
	if _, err := runCommand(ctx, a.cfg.Handlers.Message, in, a.cfg.Handlers.Timeout); err != nil {
		a.log.Warn("message handler failed", "messageId", props["$.mid"], "err", err)
	}
}

// facts are the host's static facts, reported once after each connect.
func (a *Agent) facts() map[string]any {
	m := map[string]any{"agentVersion": a.version(), "os": runtime.GOOS, "arch": runtime.GOARCH}
	if h, err := os.Hostname(); err == nil {
		m["hostname"] = h
	}
	return m
}

// version is the agent's version: Options.Version, or the module's.
func (a *Agent) version() string {
	if a.opts.Version != "" {
		return a.opts.Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

func clip(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
