package hub

import (
	"net/netip"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/zerotouch/zerotouch/internal/provision"
)

// RefusalReason says why the hub refused a CONNECT for lack of capacity
// (see RefusedConnections).
type RefusalReason string

// Capacity refusals.
const (
	// RefusedMaxClients: Options.MaxClients sessions were live.
	RefusedMaxClients RefusalReason = "max-clients"
	// RefusedProvisioningSessions: Options.MaxProvisioningSessions
	// provisioning sessions were live.
	RefusedProvisioningSessions RefusalReason = "provisioning-sessions"
	// RefusedProvisioningSessionsPerHost: the source already had
	// Options.MaxProvisioningSessionsPerHost provisioning sessions.
	RefusedProvisioningSessionsPerHost RefusalReason = "provisioning-sessions-per-host"
	// RefusedPendingConnections: Options.MaxPendingConnections connections
	// had not sent their CONNECT yet; the new one was closed unread.
	RefusedPendingConnections RefusalReason = "pending-connections"
	// RefusedPendingConnectionsPerHost: the source already had
	// Options.MaxPendingConnectionsPerHost such connections.
	RefusedPendingConnectionsPerHost RefusalReason = "pending-connections-per-host"
)

// RefusalReasons lists every RefusalReason, e.g. to export
// RefusedConnections as a labelled metric.
func RefusalReasons() []RefusalReason {
	return []RefusalReason{RefusedMaxClients, RefusedProvisioningSessions, RefusedProvisioningSessionsPerHost,
		RefusedPendingConnections, RefusedPendingConnectionsPerHost}
}

// RefusedConnections is the number of CONNECTs refused for reason since
// New (0 for an unknown reason). It is safe for concurrent use.
func (h *Hub) RefusedConnections(reason RefusalReason) uint64 {
	if n := h.refused[reason]; n != nil {
		return n.Load()
	}
	return 0
}

// capacityRefusal maps a capacity result of sessions.register to its reason and
// CONNACK code (refuse turns the code into 3.1.1 return code 3 for MQTT 3
// clients).
func capacityRefusal(r registerResult) (RefusalReason, packets.Code) {
	switch r {
	case overMaxClients:
		return RefusedMaxClients, packets.ErrServerBusy
	case overProvisioning:
		return RefusedProvisioningSessions, packets.ErrServerBusy
	case overProvisioningPerHost:
		return RefusedProvisioningSessionsPerHost, packets.ErrQuotaExceeded
	}
	return "", packets.ErrServerUnavailable
}

// refuseForCapacity counts and logs a capacity refusal (one log line a
// minute per reason and source) and returns the CONNACK code.
func (h *Hub) refuseForCapacity(r registerResult, sess Session) packets.Code {
	reason, code := capacityRefusal(r)
	h.countRefusal(reason, sess.RemoteAddr)
	return code
}

// countRefusal counts a capacity refusal and logs it, once a minute per
// reason and source at Warn, else at Debug.
func (h *Hub) countRefusal(reason RefusalReason, remote string) {
	if n := h.refused[reason]; n != nil {
		n.Add(1)
	}
	source := sourceKey(remote)
	if h.refusalLogs.First(string(reason)+"|"+source, time.Now()) {
		h.log.Warn("connection refused: capacity reached (further refusals for this source are not logged for a minute)",
			"reason", string(reason), "remote", remote, "source", source,
			"maxClients", h.opts.MaxClients,
			"maxProvisioningSessions", h.opts.MaxProvisioningSessions,
			"maxProvisioningSessionsPerHost", h.opts.MaxProvisioningSessionsPerHost,
			"maxPendingConnections", h.opts.MaxPendingConnections,
			"maxPendingConnectionsPerHost", h.opts.MaxPendingConnectionsPerHost)
	} else {
		h.log.Debug("connection refused: capacity reached", "reason", string(reason), "remote", remote)
	}
}

// sourceKey is what per-host caps count by: the IPv4 address, or the /64
// of an IPv6 address (a single host or site usually holds a whole /64, so
// counting addresses would let it open 2^64 times the cap).
func sourceKey(remote string) string {
	host := provision.SourceHost(remote)
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// Provisioning session lifetime. A provisioning session is disconnected
// when Options.ProvisioningSessionLifetime is over, but never while its
// request is being handled: a device whose provisioning was committed
// must get its answer. The timer marks the session expired and
// disconnects it unless a request is in progress; then answer does, once
// the answer is sent. Requests arriving after expiry are dropped.

// startLifetime arms c's lifetime timer; the caller stops it if c is not
// registered.
func (h *Hub) startLifetime(c *conn) {
	c.lifetime = time.AfterFunc(h.opts.ProvisioningSessionLifetime, func() {
		c.mu.Lock()
		c.expired = true
		busy := c.handling
		c.mu.Unlock()
		if !busy {
			h.expire(c)
		}
	})
}

// beginRequest reports whether a request of c may be handled (c is not
// expired) and marks it in progress.
func (c *conn) beginRequest() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expired {
		return false
	}
	c.handling = true
	return true
}

// endRequest ends what beginRequest began and reports whether c expired
// meanwhile (the caller must then disconnect it).
func (c *conn) endRequest() (expired bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handling = false
	return c.expired
}

// expire disconnects a provisioning session whose lifetime is over: MQTT 5
// clients get a DISCONNECT with reason 0xA0 (maximum connect time), MQTT
// 3 clients see the connection close.
func (h *Hub) expire(c *conn) {
	h.sessions.mu.Lock()
	if h.sessions.closed || h.sessions.live[c.cl] != c {
		h.sessions.mu.Unlock()
		return
	}
	h.bg.Add(1)
	h.sessions.mu.Unlock()
	h.log.Debug("provisioning session lifetime over: disconnecting", "client", truncate(c.sess.ClientID), "remote", c.sess.RemoteAddr, "lifetime", h.opts.ProvisioningSessionLifetime)
	h.kick(c, packets.ErrMaxConnectTime)
}
