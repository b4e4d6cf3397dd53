package hub

import (
	"errors"
	"sort"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Delivery failures.
var (
	errNotSubscribed = errors.New("the session has not subscribed to the topic")
	errSessionEnded  = errors.New("the session has ended")
	errInflightFull  = errors.New("the session has too many unacknowledged messages")
)

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
	// mochi indexes subscriptions by client id (scoped to c's identity,
	// see deviceScopedID); a taken-over session is closed and its writes
	// fail.
	sub, ok := h.srv.Topics.Subscribers(topic).Subscriptions[cl.ID]
	if !ok {
		h.log.Debug("message dropped: session not subscribed", "client", truncate(cl.ID), "remote", cl.Net.Remote, "topic", truncate(topic))
		return errNotSubscribed
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: min(sub.Qos, 1, h.srv.Options.Capabilities.MaximumQos)},
		TopicName:   topic,
		Payload:     payload,
		Properties:  props,
		Created:     time.Now().Unix(),
	}
	if len(sub.Identifiers) > 0 { // MQTT 5 subscription identifiers of every matching filter
		ids := make([]int, 0, len(sub.Identifiers))
		for _, id := range sub.Identifiers {
			ids = append(ids, id)
		}
		sort.Ints(ids)
		out.Properties.SubscriptionIdentifier = ids
	}

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

	if err := cl.WritePacket(out); err != nil {
		if out.FixedHeader.Qos > 0 && cl.State.Inflight.Delete(out.PacketID) {
			atomic.AddInt64(&h.srv.Info.Inflight, -1)
			cl.State.Inflight.IncreaseSendQuota()
		}
		return err
	}
	return nil
}
