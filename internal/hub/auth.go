package hub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// maxCredentialField bounds the user name and client id looked up in the
// store; no credential holds a longer one.
const maxCredentialField = 1024

// authTimeout bounds the store lookups of one CONNECT.
const authTimeout = 10 * time.Second

// Audit results of refused connections.
const (
	resultUnknownCredentials = "unknown-credentials"
	resultBadPassword        = "bad-password"
	resultDeviceDisabled     = "device-disabled"
	resultTopicRefused       = "topic-refused"
)

// connect decides a CONNECT and, when it is accepted, registers the
// session. It returns CodeSuccess or the reason to refuse it.
func (h *Hub) connect(cl *mqtt.Client, pk packets.Packet) packets.Code {
	// The CONNECT has arrived: the connection leaves the pending caps and
	// is accounted for by the session caps from here on.
	h.conns.connected(cl.Net.Conn)
	sess := Session{
		ClientID:        cl.ID,
		RemoteAddr:      cl.Net.Remote,
		Listener:        cl.Net.Listener,
		ProtocolVersion: cl.Properties.ProtocolVersion,
	}
	_, sess.TLS = tlsOf(cl.Net.Conn)
	username := string(pk.Connect.Username)
	if r := h.route(username); r != nil {
		if r.WithPassword {
			sess.Password = string(pk.Connect.Password)
		}
		sess.PeerCertificates = peerChain(cl)
		return h.connectProvisioning(cl, sess, username, r)
	}

	host := provision.SourceHost(sess.RemoteAddr)
	if d := h.limiter.Delay(host, time.Now()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-h.ctx.Done():
			t.Stop()
			return packets.ErrServerUnavailable
		}
	}
	ctx, cancel := context.WithTimeout(h.ctx, authTimeout)
	defer cancel()

	// A registry change (revocation, disabling) that lands between the
	// lookup and the registration could be missed by both; register
	// detects the overlap and the lookup is redone.
	chain := peerChain(cl)
	iot, isIoT := isIoTHubCONNECT(pk)
	scheme := SchemeThingsBoard
	if isIoT {
		scheme = SchemeIoTHub
	}
	for range 3 {
		seq0 := h.sessions.snapshot()
		var a auth
		var err error
		switch {
		case chain != nil:
			a, err = h.findByCertificate(ctx, chain, host)
		case isIoT && hasSAS(pk) && !sess.TLS:
			// A token in the clear is anyone's until it expires.
			a = auth{refusal: resultUnknownCredentials, detail: "a shared access signature is accepted over TLS only (MQTTS, or WebSocket over HTTPS)"}
		case isIoT && hasSAS(pk):
			a, err = h.findBySAS(ctx, pk, iot)
		default:
			a.cred, a.dev, a.refusal, err = h.findCredential(ctx, cl, pk)
		}
		if err != nil {
			h.log.Error("credential lookup failed", "client", truncate(sess.ClientID), "remote", sess.RemoteAddr, "error", err)
			return packets.ErrServerUnavailable
		}
		cred, dev := a.cred, a.dev
		if a.refusal != "" {
			h.limiter.Fail(host, time.Now())
			h.log.Info("connection refused", "client", truncate(sess.ClientID), "remote", sess.RemoteAddr, "reason", a.refusal)
			if !a.audited {
				orgID, deviceID := cmp.Or(a.orgID, registry.DefaultOrgID), a.deviceID
				if dev != nil {
					orgID, deviceID = dev.OrgID, dev.ID
				}
				h.auditConnect(orgID, deviceID, host, a.refusal, sess.ClientID, a.detail)
			}
			return cmp.Or(a.code, packets.ErrBadUsernameOrPassword)
		}
		if dev.Status != registry.DeviceEnabled {
			h.log.Info("connection refused", "client", truncate(sess.ClientID), "remote", sess.RemoteAddr, "reason", resultDeviceDisabled, "device", dev.ID)
			h.auditConnect(dev.OrgID, dev.ID, host, resultDeviceDisabled, sess.ClientID, "")
			return packets.ErrNotAuthorized
		}
		if cred.Type == registry.CredentialMQTTBasic {
			sess.Username = username
		}
		c := &conn{h: h, cl: cl, sess: sess, dev: &DeviceSession{
			Session:        sess,
			Scheme:         scheme,
			OrgID:          dev.OrgID,
			DeviceID:       dev.ID,
			DeviceName:     dev.Name,
			CredentialID:   cred.ID,
			CredentialType: cred.Type,

			CertificateSerial:      a.serial,
			CertificateFingerprint: a.fingerprint,
		}}
		c.dev.conn = c
		cl.ID = deviceScopedID(dev.ID, sess.ClientID) // before mochi shares cl
		switch res := h.sessions.register(c, seq0); res {
		case registered:
			h.presence(c, true)
			// A connection event: Info, as brokers log every connect.
			h.log.Info("device connected", "client", truncate(sess.ClientID), "remote", sess.RemoteAddr, "device", dev.ID, "credentials", cred.Type)
			return packets.CodeSuccess
		case changed:
			continue
		case closing:
			return packets.ErrServerUnavailable
		default:
			return h.refuseForCapacity(res, sess)
		}
	}
	return packets.ErrServerUnavailable
}

// connectProvisioning opens a provisioning session: no credentials, but a
// bounded keep-alive and lifetime, and caps on how many such sessions
// there are, in all and per source.
func (h *Hub) connectProvisioning(cl *mqtt.Client, sess Session, username string, r *ProvisioningRoute) packets.Code {
	sess.Username = username
	cl.ID = h.sessions.provisioningScopedID(sess.ClientID) // before mochi shares cl
	// mochi applies cl.State.Keepalive (the read deadline) once OnConnect
	// returns, and puts it in the CONNACK's Server Keep Alive when
	// ServerKeepalive is set (MQTT 5 only: MQTT 3 clients cannot be told,
	// but the deadline applies to them too). Set before register makes cl
	// reachable from other goroutines (lifetime timer, Close).
	if ka := cl.State.Keepalive; ka == 0 || ka > provisioningKeepalive {
		cl.State.Keepalive = provisioningKeepalive
		cl.State.ServerKeepalive = true
	}
	c := &conn{cl: cl, sess: sess, route: r, source: sourceKey(sess.RemoteAddr)}
	h.startLifetime(c)
	switch res := h.sessions.register(c, 0); res {
	case registered:
	case closing:
		c.lifetime.Stop()
		cl.State.ServerKeepalive = false // not in the refusal
		return packets.ErrServerUnavailable
	default:
		c.lifetime.Stop()
		cl.State.ServerKeepalive = false
		return h.refuseForCapacity(res, sess)
	}
	h.log.Debug("provisioning session opened", "client", truncate(sess.ClientID), "remote", sess.RemoteAddr, "listener", sess.Listener, "keepalive", cl.State.Keepalive)
	return packets.CodeSuccess
}

// findCredential finds the active credential a CONNECT without a TLS
// client certificate presents (findByCertificate handles those):
//   - no user name: MQTT_BASIC by client id alone, and nothing else;
//   - a user name, in order: MQTT_BASIC (client id, user name),
//     ACCESS_TOKEN (the user name is the token), MQTT_BASIC (user name
//     alone, any client id).
//
// The order cannot be ambiguous: the store keeps the MQTT user name space
// unique among active credentials (registry.Credential.UserKey), so at
// most one active credential, token or MQTT_BASIC, claims a user name,
// and the tries above can find at most one credential. A CONNECT with a
// user name is NEVER taken for a client-id-only MQTT_BASIC credential
// (unlike ThingsBoard, which falls back to it): a device reconnecting
// with a revoked token, or any unknown user name, must be refused, not
// authenticated as whichever device's client id it happens to send.
//
// An MQTT_BASIC credential with a password requires it; the first one
// found decides (a wrong password is not retried as another combination).
// A credential without a password authenticates by its ids alone, and any
// password sent is then ignored, as ThingsBoard does. refusal is empty on
// success; err is set only when the store fails.
func (h *Hub) findCredential(ctx context.Context, cl *mqtt.Client, pk packets.Packet) (cred *registry.Credential, dev *registry.Device, refusal string, err error) {
	cid, user := pk.Connect.ClientIdentifier, string(pk.Connect.Username)
	if len(user) > maxCredentialField {
		return nil, nil, resultUnknownCredentials, nil
	}
	if len(cid) > maxCredentialField {
		cid = "" // no MQTT_BASIC credential has such a client id
	}
	var password *string
	if pk.Connect.PasswordFlag {
		p := string(pk.Connect.Password)
		password = &p
	}
	type try struct {
		t   registry.CredentialType
		key string
	}
	var tries []try
	basic := func(cid, user string) try {
		return try{registry.CredentialMQTTBasic, registry.MQTTBasicLookupKey(cid, user)}
	}
	switch {
	case user == "" && cid == "":
		return nil, nil, resultUnknownCredentials, nil
	case user == "":
		tries = []try{basic(cid, "")}
	default:
		if cid != "" {
			tries = append(tries, basic(cid, user))
		}
		tries = append(tries, try{registry.CredentialAccessToken, secret.LookupHash(user)}, basic("", user))
		// No basic(cid, ""): see above.
	}
	for _, t := range tries {
		cred, dev, refusal, err = h.lookup(ctx, t.t, t.key, password)
		if err != nil || refusal != resultUnknownCredentials {
			return cred, dev, refusal, err
		}
	}
	return nil, nil, resultUnknownCredentials, nil
}

// lookup finds one credential and checks its password (MQTT_BASIC only).
func (h *Hub) lookup(ctx context.Context, t registry.CredentialType, key string, password *string) (*registry.Credential, *registry.Device, string, error) {
	cred, dev, err := h.store.FindActiveCredential(ctx, t, key)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, nil, resultUnknownCredentials, nil
	case err != nil:
		return nil, nil, "", err
	case cred == nil || dev == nil:
		return nil, nil, "", fmt.Errorf("store returned no %s credential or device and no error", t)
	}
	if t == registry.CredentialMQTTBasic && cred.SecretHash != "" {
		if password == nil || !h.opts.Verifier.Verify(*password, cred.SecretHash) {
			return nil, dev, resultBadPassword, nil
		}
	}
	return cred, dev, "", nil
}

// refuse sends the CONNACK that refuses a connection; MQTT 3 clients get
// the nearest 3.1.1 return code (5, not authorised, for any
// authentication failure; 3, server unavailable, otherwise).
func (h *Hub) refuse(cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion < 5 {
		switch code {
		case packets.ErrBadUsernameOrPassword, packets.ErrNotAuthorized:
			code = packets.ErrBadUsernameOrPassword // mochi sends it as 3.1.1 code 5
		default:
			code = packets.ErrServerUnavailable // mochi sends it as 3.1.1 code 3
		}
	}
	if err := h.srv.SendConnack(cl, code, false, nil); err != nil {
		h.log.Debug("refusal not sent", "client", truncate(cl.ID), "remote", cl.Net.Remote, "error", err)
	}
}

// auditConnect records a refused CONNECT (at most once a minute per
// source, reason and device, so that a device retrying in a loop does not
// flood the audit trail); detail, when set, says more.
func (h *Hub) auditConnect(orgID, deviceID, source, result, clientID, detail string) {
	if !h.audits.First(source+"|"+result+"|"+deviceID, time.Now()) {
		return
	}
	msg := "MQTT connection refused for client id " + quote(clientID)
	if detail != "" {
		msg += ": " + detail
	}
	h.audit(registry.AuditEvent{
		OrgID:    orgID,
		Actor:    "device",
		Action:   "mqtt.connect",
		Result:   result,
		DeviceID: deviceID,
		Source:   source,
		Detail:   msg,
	})
}

// quote makes a client-chosen string safe and short for an audit detail.
func quote(s string) string {
	const max = 128
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
