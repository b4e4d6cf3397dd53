package hub

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mochiLogHandler adapts mochi's logs to the hub's: its chatty Info lines
// and its warnings about misbehaving clients become Debug, and packets it
// attaches to log lines (which may carry passwords, tokens and provisioning
// secrets) are reduced to their type, topic and size.
type mochiLogHandler struct{ next slog.Handler }

func newMochiLogHandler(next slog.Handler) slog.Handler { return mochiLogHandler{next: next} }

func (m mochiLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return m.next.Enabled(ctx, l)
}

func (m mochiLogHandler) Handle(ctx context.Context, r slog.Record) error {
	level, msg := r.Level, r.Message
	switch {
	case level == slog.LevelInfo:
		level = slog.LevelDebug
	case level == slog.LevelWarn && msg == "error processing packet":
		// A client broke the protocol or the ACL.
		level = slog.LevelDebug
	}
	if !m.next.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redact(a))
		return true
	})
	return m.next.Handle(ctx, out)
}

func (m mochiLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redact(a)
	}
	return mochiLogHandler{next: m.next.WithAttrs(red)}
}

func (m mochiLogHandler) WithGroup(name string) slog.Handler {
	return mochiLogHandler{next: m.next.WithGroup(name)}
}

// redact replaces a packet by a summary without payload, credentials or
// properties.
func redact(a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	var pk *packets.Packet
	switch v := a.Value.Any().(type) {
	case packets.Packet:
		pk = &v
	case *packets.Packet:
		pk = v
	default:
		return a
	}
	if pk == nil {
		return a
	}
	return slog.Group(a.Key,
		slog.Int("type", int(pk.FixedHeader.Type)),
		slog.String("topic", truncate(pk.TopicName)),
		slog.Int("id", int(pk.PacketID)),
		slog.Int("qos", int(pk.FixedHeader.Qos)),
		slog.Int("payloadBytes", len(pk.Payload)),
	)
}
