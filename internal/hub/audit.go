package hub

import (
	"context"
	"time"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// audit appends ev in the background; Close waits for it.
func (h *Hub) audit(ev registry.AuditEvent) {
	h.sessions.mu.Lock()
	if h.sessions.closed {
		h.sessions.mu.Unlock()
		return
	}
	h.bg.Add(1)
	h.sessions.mu.Unlock()
	go func() {
		defer h.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.store.AppendAudit(ctx, ev); err != nil {
			h.log.Warn("audit event not recorded", "action", ev.Action, "result", ev.Result, "error", err)
		}
	}()
}

// auditTopic records the first refused publish or subscription of a session.
func (h *Hub) auditTopic(c *conn, topic string, write bool) {
	if c.aclAudited.Swap(true) {
		return
	}
	ev := registry.AuditEvent{
		OrgID:  registry.DefaultOrgID,
		Actor:  "device",
		Action: "mqtt.topic",
		Result: resultTopicRefused,
		Source: provision.SourceHost(c.sess.RemoteAddr),
	}
	verb := "subscription to"
	if write {
		verb = "publish to"
	}
	if c.dev != nil {
		ev.OrgID, ev.DeviceID = c.dev.OrgID, c.dev.DeviceID
	}
	kind := "device"
	if c.route != nil {
		kind = "provisioning"
	}
	ev.Detail = kind + " session of client id " + quote(c.sess.ClientID) + ": " + verb + " " + quote(topic) + " refused (further refusals in this session are not recorded)"
	h.audit(ev)
}
