package hub

import (
	"bytes"
	"context"
	"runtime/debug"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// hook plugs the hub into mochi. Every method is called on a client's own
// goroutine (its read path), except OnDisconnect and OnClientExpired which
// may also come from mochi's housekeeping.
type hook struct {
	mqtt.HookBase
	h *Hub
}

func (k *hook) ID() string { return "zerotouch-hub" }

func (k *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnPublish,
		mqtt.OnPublished,
		mqtt.OnDisconnect,
	}, []byte{b})
}

// OnConnect authenticates the client. Refusals are answered here, because
// mochi's own refusal (when OnConnectAuthenticate returns false) can only
// say "bad user name or password"; returning an error makes mochi close
// the connection without a CONNACK of its own.
func (k *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) (err error) {
	h := k.h
	code := packets.ErrServerUnavailable
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("panic while authenticating a connection", "client", truncate(cl.ID), "remote", cl.Net.Remote, "panic", r, "stack", string(debug.Stack()))
			code = packets.ErrServerUnavailable
		}
		if code != packets.CodeSuccess {
			h.refuse(cl, code)
			err = code
		}
	}()
	code = h.connect(cl, pk)
	if code == packets.CodeSuccess && pk.Connect.WillFlag {
		// A will is published by the broker itself, past every ACL: it
		// would let a session write to any topic. The device APIs served
		// here define no wills, so they are dropped.
		cl.Properties.Will = mqtt.Will{}
		h.log.Debug("last will ignored", "client", truncate(cl.ID), "remote", cl.Net.Remote)
	}
	return nil
}

// OnConnectAuthenticate accepts what OnConnect registered.
func (k *hook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	c := k.h.sessions.lookup(cl)
	return c != nil && !c.revoked.Load()
}

// OnACLCheck confines each session to its topics. mochi calls it for
// every publish (write) and every subscription filter (read), and before
// delivering a message fanned out to a subscriber (read).
func (k *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	c := k.h.sessions.lookup(cl)
	if c == nil || c.revoked.Load() {
		return false
	}
	if allowed(c, topic, write) {
		return true
	}
	k.h.log.Debug("topic refused", "client", truncate(cl.ID), "remote", cl.Net.Remote, "topic", truncate(topic), "publish", write)
	k.h.auditTopic(c, topic, write)
	return false
}

// allowed is the ACL. A provisioning session may publish only to its
// request topic and subscribe only to its response topic, exactly; a
// device session may publish and subscribe only below DeviceTopicPrefix
// (wildcards allowed there). Those device topics are per session: nothing
// published there reaches another session.
func allowed(c *conn, topic string, write bool) bool {
	switch {
	case c.route != nil && write:
		return topic == c.route.RequestTopic
	case c.route != nil:
		return topic == c.route.ResponseTopic
	case c.dev != nil:
		return strings.HasPrefix(topic, DeviceTopicPrefix)
	}
	return false
}

// OnPublish keeps every client publish away from mochi's fan-out: the ACL
// has passed, so the message is acknowledged (QoS 1 and 2) but neither
// forwarded nor retained. OnPublished then hands it to its handler.
func (k *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	c := k.h.sessions.lookup(cl)
	if c == nil || c.revoked.Load() || !allowed(c, pk.TopicName, true) {
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// OnPublished runs the handler of an accepted publish. mochi calls it
// after the PUBACK (or PUBREC) went out and the packet's id was released,
// so the answer is sent after the acknowledgement and may reuse that id.
func (k *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	h := k.h
	c := h.sessions.lookup(cl)
	if c == nil || c.revoked.Load() {
		return
	}
	h.handling.RLock()
	defer h.handling.RUnlock()
	if h.draining {
		h.log.Debug("publish dropped: shutting down", "client", truncate(c.sess.ClientID), "topic", truncate(pk.TopicName))
		return
	}
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("panic in a publish handler", "client", truncate(cl.ID), "remote", cl.Net.Remote, "topic", truncate(pk.TopicName), "panic", r, "stack", string(debug.Stack()))
		}
	}()
	switch {
	case c.route != nil && pk.TopicName == c.route.RequestTopic:
		h.answer(c, pk)
	case c.dev != nil:
		fn := h.deviceTopicHandler(pk.TopicName)
		if fn == nil {
			h.log.Debug("device publish dropped: no handler for the topic", "client", truncate(cl.ID), "device", c.dev.DeviceID, "topic", truncate(pk.TopicName))
			return
		}
		ctx, cancel := context.WithTimeout(h.ctx, h.opts.HandleTimeout)
		defer cancel()
		fn(ctx, *c.dev, pk.TopicName, pk.Payload)
	}
}

// answer runs a provisioning request through its route and sends the
// answer to the requesting session alone.
func (h *Hub) answer(c *conn, pk packets.Packet) {
	if !c.beginRequest() {
		h.log.Debug("provisioning request dropped: session lifetime over", "client", truncate(c.sess.ClientID), "remote", c.sess.RemoteAddr)
		return
	}
	defer func() {
		if c.endRequest() {
			h.expire(c)
		}
	}()
	ctx, cancel := context.WithTimeout(h.ctx, h.opts.HandleTimeout)
	defer cancel()
	resp := c.route.Handle(ctx, c.sess, pk.Payload)
	if resp == nil {
		return
	}
	var props packets.Properties
	if c.sess.ProtocolVersion == 5 {
		// MQTT 5 request/response: the requester matches the answer by it.
		props.CorrelationData = pk.Properties.CorrelationData
	}
	if err := h.deliver(c, c.route.ResponseTopic, resp, props); err != nil {
		h.log.Info("provisioning answer not delivered", "client", truncate(c.sess.ClientID), "remote", c.sess.RemoteAddr, "error", err)
	}
}

// OnDisconnect forgets the session. Provisioning sessions are never kept
// for a later reconnection, even when the client asked for it: mochi's
// state for them (subscription, unacknowledged answers) is dropped here
// (mochi drops it again, harmlessly, after a clean session).
func (k *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h := k.h
	c := h.sessions.lookup(cl)
	if c == nil {
		return
	}
	if c.route != nil {
		// The client id is this connection's own (see deviceScopedID).
		// Done before the session is forgotten, so that once
		// ConnectedSessions no longer counts it mochi keeps nothing of it.
		h.srv.UnsubscribeClient(cl)
		cl.ClearInflights()
		if cur, ok := h.srv.Clients.Get(cl.ID); ok && cur == cl {
			h.srv.Clients.Delete(cl.ID)
		}
	}
	h.sessions.unregister(cl)
	h.log.Debug("session closed", "client", truncate(c.sess.ClientID), "remote", c.sess.RemoteAddr, "error", err)
}

// truncate shortens a client-chosen string for a log line.
func truncate(s string) string {
	const max = 128
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
