package hub

import (
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// kickWriteTimeout bounds the DISCONNECT written to a revoked session, so
// a client that stopped reading cannot hold a disconnect up.
const kickWriteTimeout = 2 * time.Second

// onChange is subscribed to Options.Changes. Sessions that the change ends
// are refused all traffic at once (before onChange returns) and are
// disconnected in the background: MQTT 5 clients get a DISCONNECT with
// reason 0x87 (not authorized: credentials or the session's TLS client
// certificate revoked, on whichever listener) or 0x98
// (administrative action: device disabled or deleted); MQTT 3 clients,
// which have no server DISCONNECT, see the connection close.
func (h *Hub) onChange(ch registry.Change) {
	code := packets.ErrNotAuthorized
	if ch.Kind == registry.ChangeDeviceDisabled || ch.Kind == registry.ChangeDeviceDeleted {
		code = packets.ErrAdministrativeAction
	}
	h.sessions.mu.Lock()
	if h.sessions.closed {
		h.sessions.mu.Unlock()
		return
	}
	victims := h.sessions.revoke(ch)
	h.bg.Add(len(victims))
	h.sessions.mu.Unlock()
	for _, c := range victims {
		h.log.Info("disconnecting device session", "client", truncate(c.sess.ClientID), "remote", c.sess.RemoteAddr, "device", c.dev.DeviceID, "change", string(ch.Kind))
		go h.kick(c, code)
	}
}

func (h *Hub) kick(c *conn, code packets.Code) {
	defer h.bg.Done()
	if nc := c.cl.Net.Conn; nc != nil {
		nc.SetWriteDeadline(time.Now().Add(kickWriteTimeout))
	}
	if c.sess.ProtocolVersion >= 5 {
		h.srv.DisconnectClient(c.cl, code)
	} else {
		c.cl.Stop(code)
	}
}
