package hub

import (
	"errors"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Delivery failures.
var (
	errNotSubscribed = errors.New("the session has not subscribed to the topic")
	errSessionEnded  = errors.New("the session has ended")
	errInflightFull  = errors.New("the session has too many unacknowledged messages")
)

// DeliverToDevice publishes a message on topic (of either device topic
// scheme, ThingsBoard's or IoT Hub's) to every live session of the device
// that subscribed to it, and returns how many took it. Nothing is queued for a device that is offline: the
// caller decides what an undelivered message means.
func (h *Hub) DeliverToDevice(deviceID, topic string, payload []byte) int {
	h.sessions.mu.Lock()
	targets := make([]*conn, 0, len(h.sessions.byDevice[deviceID]))
	for c := range h.sessions.byDevice[deviceID] {
		targets = append(targets, c)
	}
	h.sessions.mu.Unlock()
	n := 0
	for _, c := range targets {
		if err := h.deliver(c, topic, payload, packets.Properties{}); err != nil {
			if !errors.Is(err, errNotSubscribed) {
				h.log.Info("message to device not delivered", "client", truncate(c.sess.ClientID), "device", deviceID, "topic", truncate(topic), "error", err)
			}
			continue
		}
		n++
	}
	return n
}

// deliver publishes one message to one session, never through mochi's
// fan-out: it does for c what mochi's unexported publishToClient does for
// each subscriber. The session must hold a subscription matching topic;
// its granted QoS, capped at 1, is the message's. A QoS 1 message is
// recorded in the client's in-flight store under a fresh packet id, so
// that mochi accepts the PUBACK (and resends it if the session is resumed).
func (h *Hub) deliver(c *conn, topic string, payload []byte, props packets.Properties) error {
	cl := c.cl
	if c.revoked.Load() || cl.Closed() {
		return errSessionEnded
	}
	// The session's own subscriptions, not mochi's topic index: the index
	// would copy every subscriber of topic (every provisioning session
	// waiting on the response topic) for each answer. A taken-over
	// session is closed and its writes fail.
	qos, ids, ok := ownSubscription(cl.State.Subscriptions, topic)
	if !ok {
		h.log.Debug("message dropped: session not subscribed", "client", truncate(cl.ID), "remote", cl.Net.Remote, "topic", truncate(topic))
		return errNotSubscribed
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: min(qos, 1, h.srv.Options.Capabilities.MaximumQos)},
		TopicName:   topic,
		Payload:     payload,
		Properties:  props,
		Created:     time.Now().Unix(),
	}
	out.Properties.SubscriptionIdentifier = ids // MQTT 5, of every matching filter

	if out.FixedHeader.Qos > 0 {
		if cl.State.Inflight.Len() >= int(h.srv.Options.Capabilities.MaximumInflight) {
			return errInflightFull
		}
		id, err := cl.NextPacketID() // never an id in flight in either direction
		if err != nil {
			return errInflightFull
		}
		out.PacketID = uint16(id)
		if cl.State.Inflight.Set(out) {
			atomic.AddInt64(&h.srv.Info.Inflight, 1)
		}
		// processPuback gives the send quota back.
		cl.State.Inflight.DecreaseSendQuota()
	}

	// mochi writes to the socket directly: a client that stops reading
	// would block this caller (an RPC, an attribute push, a handler on the
	// read path holding up Close) for as long as its TCP buffers stay full.
	// A write that cannot finish in deliverWriteTimeout ends the session.
	nc := cl.Net.Conn
	if nc != nil {
		nc.SetWriteDeadline(time.Now().Add(deliverWriteTimeout))
	}
	err := cl.WritePacket(out)
	if nc != nil {
		nc.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		if out.FixedHeader.Qos > 0 && cl.State.Inflight.Delete(out.PacketID) {
			atomic.AddInt64(&h.srv.Info.Inflight, -1)
			cl.State.Inflight.IncreaseSendQuota()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			h.log.Info("session closed: it does not read what is sent to it", "client", truncate(cl.ID), "remote", cl.Net.Remote)
			cl.Stop(err)
		}
		return err
	}
	return nil
}

// deliverWriteTimeout bounds one message written to a session.
const deliverWriteTimeout = 5 * time.Second

// ownSubscription merges a client's subscriptions whose filter matches
// topic, as mochi's topic index would for that client: the highest QoS
// and the identifiers (MQTT 5) of every matching filter, sorted. It reads
// only the client's own subscriptions (one for a provisioning session,
// whose ACL admits only its exact response topic). Shared subscriptions
// are disabled on the hub and never match.
func ownSubscription(subs *mqtt.Subscriptions, topic string) (qos byte, ids []int, ok bool) {
	if subs.Len() == 1 { // the common case: no copy
		if sub, found := subs.Get(topic); found {
			if sub.Identifier > 0 {
				ids = []int{sub.Identifier}
			}
			return sub.Qos, ids, true
		}
	}
	for filter, sub := range subs.GetAll() {
		if !filterMatches(filter, topic) {
			continue
		}
		ok = true
		qos = max(qos, sub.Qos)
		if sub.Identifier > 0 {
			ids = append(ids, sub.Identifier)
		}
	}
	sort.Ints(ids)
	return qos, ids, ok
}

// filterMatches reports whether topic filter f matches topic name t
// (MQTT 3.1.1 section 4.7): "+" matches one level, a final "#" the parent
// level and every level below it, and wildcards at the first level never
// match a topic starting with "$".
func filterMatches(f, t string) bool {
	if strings.HasPrefix(f, "$share/") || strings.HasPrefix(f, "$SHARE/") {
		return false
	}
	if t == "" || (t[0] == '$' && (strings.HasPrefix(f, "+") || strings.HasPrefix(f, "#"))) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(f, "/")
		if fl == "#" {
			return !fmore
		}
		tl, trest, tmore := strings.Cut(t, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a" too.
			return fmore == tmore || (fmore && frest == "#")
		}
		f, t = frest, trest
	}
}
