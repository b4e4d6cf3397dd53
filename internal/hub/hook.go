package hub

import (
	"bytes"
	"context"
	"errors"
	"runtime/debug"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/device"
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
// request topic (or below its request prefix) and subscribe only to its
// response topic (or filter), exactly; a
// ThingsBoard device session may publish and subscribe only below
// DeviceTopicPrefix (wildcards allowed there), an IoT Hub device session
// only its own IoT Hub topics (allowedIoTHub). Those device topics are per session: nothing
// published there reaches another session.
func allowed(c *conn, topic string, write bool) bool {
	switch {
	case c.route != nil && write:
		return c.route.isRequest(topic)
	case c.route != nil:
		return topic == c.route.ResponseTopic
	case c.dev != nil && c.dev.Scheme == SchemeIoTHub:
		return allowedIoTHub(c.dev.DeviceName, topic, write)
	case c.dev != nil:
		return strings.HasPrefix(topic, DeviceTopicPrefix)
	}
	return false
}

// OnPublish keeps every client publish away from mochi's fan-out: nothing
// a client publishes is forwarded or retained. A device's publish is
// handled here, before it is acknowledged, so that a QoS 1 message is
// acknowledged only once its handler accepted it, and refused with an MQTT
// 5 reason code otherwise (see refusePublish). A provisioning request is
// acknowledged first and answered by OnPublished.
func (k *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	h := k.h
	c := h.sessions.lookup(cl)
	if c == nil || c.revoked.Load() || !allowed(c, pk.TopicName, true) {
		return pk, packets.ErrRejectPacket
	}
	if c.dev == nil {
		return pk, packets.CodeSuccessIgnore
	}
	fn := h.deviceTopicHandler(pk.TopicName)
	if fn == nil {
		h.log.Debug("device publish dropped: no handler for the topic", "client", truncate(cl.ID), "device", c.dev.DeviceID, "topic", truncate(pk.TopicName))
		return pk, packets.CodeSuccessIgnore
	}
	h.handling.RLock()
	defer h.handling.RUnlock()
	if h.draining {
		// Not acknowledged: the client sends it again after reconnecting.
		return pk, packets.ErrRejectPacket
	}
	err := h.runDeviceHandler(fn, c, pk)
	if err == nil {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, h.refusePublish(c, pk, err)
}

// runDeviceHandler calls a device topic handler, turning a panic into an
// error so that one bad message cannot take the broker down.
func (h *Hub) runDeviceHandler(fn DeviceTopicHandler, c *conn, pk packets.Packet) (err error) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("panic in a device topic handler", "client", truncate(c.sess.ClientID), "remote", c.sess.RemoteAddr, "topic", truncate(pk.TopicName), "panic", r, "stack", string(debug.Stack()))
			err = errHandlerPanic
		}
	}()
	ctx, cancel := context.WithTimeout(h.ctx, h.opts.HandleTimeout)
	defer cancel()
	return fn(ctx, *c.dev, pk.TopicName, pk.Payload)
}

var errHandlerPanic = errors.New("internal error while handling the message")

// refusePublish answers a device message its handler refused. MQTT 5 QoS 1
// messages get a PUBACK with a reason code: 0x99 (payload format invalid)
// for a malformed payload or too many keys, 0x97 (quota exceeded) when the
// device sends too fast or the server cannot store more now, 0x80 for
// anything else. Where there is no PUBACK to carry the refusal (QoS 0, MQTT
// 3, QoS 2):
//   - a malformed message is acknowledged and dropped (logged, and
//     counted by its handler): sending it again would not mend it;
//   - a device over its message rate is disconnected (MQTT 5: reason 0x96,
//     message rate too high);
//   - an oversized payload always disconnects (MQTT 5: 0x95, packet too
//     large), as the broker does for packets over its own size limit;
//   - a message the server cannot store now disconnects the device when it
//     asked for delivery (QoS 1 or 2): unacknowledged, it is sent again
//     after the reconnection. At QoS 0 it is dropped.
func (h *Hub) refusePublish(c *conn, pk packets.Packet, err error) error {
	v5ack := c.sess.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1
	log := h.log.With("client", truncate(c.sess.ClientID), "remote", c.sess.RemoteAddr, "device", c.dev.DeviceID, "topic", truncate(pk.TopicName), "error", err)
	var disconnect packets.Code
	switch {
	case errors.Is(err, device.ErrTooLarge):
		disconnect = packets.ErrPacketTooLarge
	case errors.Is(err, device.ErrBadPayload), errors.Is(err, device.ErrTooManyKeys):
		log.Info("device message refused")
		if v5ack {
			return withReason(packets.ErrPayloadFormatInvalid, err)
		}
		// Acknowledged and dropped: resending it would not make it valid.
		return packets.CodeSuccessIgnore
	case errors.Is(err, device.ErrRateLimited):
		if v5ack {
			log.Debug("device message refused")
			return withReason(packets.ErrQuotaExceeded, err)
		}
		disconnect = packets.ErrMessageRateTooHigh
	case errors.Is(err, device.ErrOverloaded):
		if v5ack {
			return withReason(packets.ErrQuotaExceeded, err)
		}
		if pk.FixedHeader.Qos == 0 {
			return packets.ErrRejectPacket
		}
		disconnect = packets.ErrServerBusy
	default:
		log.Warn("device message could not be handled")
		if v5ack {
			return withReason(packets.ErrUnspecifiedError, err)
		}
		if pk.FixedHeader.Qos == 0 {
			return packets.ErrRejectPacket
		}
		disconnect = packets.ErrUnspecifiedError
	}
	log.Info("device disconnected: message refused", "reason", disconnect.Reason)
	if nc := c.cl.Net.Conn; nc != nil {
		nc.SetWriteDeadline(time.Now().Add(kickWriteTimeout))
	}
	if c.sess.ProtocolVersion >= 5 {
		h.srv.DisconnectClient(c.cl, disconnect)
	} else {
		c.cl.Stop(disconnect)
	}
	return packets.ErrRejectPacket
}

// withReason adds err's text as the MQTT 5 reason string of code.
func withReason(code packets.Code, err error) packets.Code {
	code.Reason = truncate(err.Error())
	return code
}

// OnPublished answers a provisioning request. mochi calls it after the
// PUBACK (or PUBREC) went out and the packet's id was released, so the
// answer is sent after the acknowledgement and may reuse that id.
func (k *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	h := k.h
	c := h.sessions.lookup(cl)
	if c == nil || c.revoked.Load() || c.route == nil || !c.route.isRequest(pk.TopicName) {
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
	h.answer(c, pk)
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
	topic, resp := c.route.ResponseTopic, []byte(nil)
	if c.route.HandleRequest != nil {
		topic, resp = c.route.HandleRequest(ctx, c.sess, pk.TopicName, pk.Payload)
		if topic == "" {
			return
		}
	} else if resp = c.route.Handle(ctx, c.sess, pk.Payload); resp == nil {
		return
	}
	var props packets.Properties
	if c.sess.ProtocolVersion == 5 {
		// MQTT 5 request/response: the requester matches the answer by it.
		props.CorrelationData = pk.Properties.CorrelationData
	}
	if err := h.deliver(c, topic, resp, props); err != nil {
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
	if gone := h.sessions.unregister(cl); gone != nil && gone.dev != nil {
		h.presence(gone, false)
		h.log.Info("device disconnected", "client", truncate(c.sess.ClientID), "remote", c.sess.RemoteAddr, "device", c.dev.DeviceID, "reason", err)
		return
	}
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
