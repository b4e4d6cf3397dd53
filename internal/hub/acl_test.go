package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/registry"
)

func TestDeviceSubscribeACL(t *testing.T) {
	e := newEnv(t)
	tok, _, _ := e.tokenDevice()
	for _, v := range []byte{4, 5} {
		denied := byte(0x80)
		if v == 5 {
			denied = 0x87
		}
		_, cl := connectCode(t, e, v, rawConnect{ClientID: fmt.Sprint("acl-", v), Username: []byte(tok)})
		if cl == nil {
			t.Fatal("refused")
		}
		for _, tc := range []struct {
			filter string
			want   byte
		}{
			{"#", denied},
			{"+/#", denied},
			{"+", denied},
			{"$SYS/#", denied},
			{"$SYS/broker/clients/connected", denied},
			{"v1/#", denied},
			{"v1/devices/+/telemetry", denied},
			{"v1/devices/other/telemetry", denied},
			{"v1/devices/me", denied},
			{"$share/g/v1/devices/me/telemetry", denied},
			{provResp, denied},
			{provReq, denied},
			{"v1/devices/me/#", 1},
			{"v1/devices/me/rpc/request/+", 1},
			{"v1/devices/me/attributes", 1},
		} {
			if got := cl.subscribe(tc.filter, 1); got != tc.want {
				t.Errorf("v%d SUBSCRIBE %q = 0x%02x, want 0x%02x", v, tc.filter, got, tc.want)
			}
		}
		if pubs := cl.sync(); len(pubs) != 0 {
			t.Errorf("v%d: received %d messages (first on %q)", v, len(pubs), pubs[0].TopicName)
		}
	}
	evs, err := e.store.ListAudit(context.Background(), registry.DefaultOrgID, registry.AuditFilter{Action: "mqtt.topic"})
	if err == nil && len(evs) > 2 {
		t.Errorf("%d topic refusals audited, want at most one per session", len(evs))
	}
}

func TestDevicePublishACL(t *testing.T) {
	e := newEnv(t)
	tok, dev, _ := e.tokenDevice()
	_, cl := connectCode(t, e, 5, rawConnect{ClientID: "pub5", Username: []byte(tok)})
	for _, tc := range []struct {
		topic string
		want  byte
	}{
		{"other/topic", packets.ErrNotAuthorized.Code},
		{provReq, packets.ErrNotAuthorized.Code},
		{provResp, packets.ErrNotAuthorized.Code},
		{"v1/devices/other/telemetry", packets.ErrNotAuthorized.Code},
		{"v1/devices/me", packets.ErrNotAuthorized.Code},
		{"v1/devices/me/telemetry", 0},
		{"v1/devices/me/attributes", 0},
	} {
		ack, ok := cl.publish(tc.topic, 1, []byte("{}"), packets.Properties{})
		if !ok || ack.ReasonCode != tc.want {
			t.Errorf("v5 PUBLISH %q: ok=%v reason 0x%02x, want 0x%02x", tc.topic, ok, ack.ReasonCode, tc.want)
		}
		if tc.want == 0 {
			if p := e.nextDevicePub(t); p.topic != tc.topic || p.sess.DeviceID != dev.ID {
				t.Errorf("handler got %q from %s", p.topic, p.sess.DeviceID)
			}
		}
	}

	// MQTT 3.1.1: a refused QoS 1 publish ends the connection.
	_, cl4 := connectCode(t, e, 4, rawConnect{ClientID: "pub4", Username: []byte(tok)})
	if _, ok := cl4.publish("other/topic", 1, []byte("{}"), packets.Properties{}); ok {
		t.Error("v4 publish to another topic acknowledged")
	}
	cl4.waitClosed()

	eventually(t, "refusal audited", func() bool {
		evs, err := e.store.ListAudit(context.Background(), registry.DefaultOrgID, registry.AuditFilter{Action: "mqtt.topic", DeviceID: dev.ID})
		return err == nil && len(evs) == 2 // one per session
	})
}

// TestDevicePublishNotForwarded: what a device publishes on its "me"
// topics reaches the handler and no other session: not another device,
// not another session of the same device, not itself, not a later
// subscriber (nothing is retained).
func TestDevicePublishNotForwarded(t *testing.T) {
	e := newEnv(t)
	tokA, devA, _ := e.tokenDevice()
	tokB, _, _ := e.tokenDevice()
	_, a := connectCode(t, e, 4, rawConnect{ClientID: "a", Username: []byte(tokA)})
	_, a2 := connectCode(t, e, 5, rawConnect{ClientID: "a-second", Username: []byte(tokA)})
	_, b := connectCode(t, e, 4, rawConnect{ClientID: "b", Username: []byte(tokB)})
	for _, cl := range []*rawClient{a, a2, b} {
		cl.subscribe("v1/devices/me/#", 1)
		cl.subscribe("v1/devices/me/telemetry", 1)
	}
	for _, qos := range []byte{0, 1, 2} {
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: true},
			TopicName:   "v1/devices/me/telemetry",
			Payload:     fmt.Appendf(nil, `{"qos":%d}`, qos),
		}
		if qos > 0 {
			pk.PacketID = a.id()
		}
		a.send(pk)
		p := e.nextDevicePub(t)
		if p.sess.DeviceID != devA.ID || p.payload != string(pk.Payload) {
			t.Fatalf("handler got %q from %s", p.payload, p.sess.DeviceID)
		}
		// The handler runs after mochi's fan-out would have happened.
		for name, cl := range map[string]*rawClient{"other device": b, "same device, other session": a2} {
			if pubs := cl.sync(); len(pubs) != 0 {
				t.Errorf("QoS %d: %s received %q", qos, name, pubs[0].Payload)
			}
		}
		if qos == 2 {
			a.expectPubrec(t)
		}
		if qos == 1 {
			if ack := a.expect(packets.Puback); ack.PacketID != pk.PacketID {
				t.Errorf("PUBACK for %d, want %d", ack.PacketID, pk.PacketID)
			}
		}
		if pubs := a.sync(); len(pubs) != 0 {
			t.Errorf("QoS %d: publisher received its own message", qos)
		}
	}
	_, c := connectCode(t, e, 4, rawConnect{ClientID: "late", Username: []byte(tokB)})
	c.subscribe("v1/devices/me/#", 1)
	if pubs := c.sync(); len(pubs) != 0 {
		t.Errorf("a retained message was delivered: %q", pubs[0].Payload)
	}
}

// expectPubrec reads the PUBREC of a QoS 2 publish.
func (cl *rawClient) expectPubrec(t *testing.T) {
	t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := cl.r.ReadByte()
	if err != nil {
		t.Fatalf("reading PUBREC: %v", err)
	}
	if b>>4 != packets.Pubrec {
		t.Fatalf("got packet type %d, want PUBREC", b>>4)
	}
	n, _, err := packets.DecodeLength(cl.r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.r.Discard(n); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceWithoutTopicHandlerIsAcknowledged(t *testing.T) {
	e := newEnv(t)
	h, err := New(Options{Store: e.store, Logger: testLogger(t), Limiter: lenientLimiter()})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := h.ListenTCP("bare", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	tok, _, _ := e.tokenDevice()
	cl, ack := dialRaw(t, addr.String(), 5, rawConnect{ClientID: "x", Username: []byte(tok), Clean: true})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
	}
	if ack, ok := cl.publish("v1/devices/me/telemetry", 1, []byte("{}"), packets.Properties{}); !ok || ack.ReasonCode != 0 {
		t.Fatalf("PUBACK ok=%v 0x%02x", ok, ack.ReasonCode)
	}
	// Nobody may provision on a hub without a provisioning route.
	_, ack = dialRaw(t, addr.String(), 5, rawConnect{ClientID: "y", Username: []byte(provUser), Clean: true})
	if ack.ReasonCode != v5BadUserNameOrPassword {
		t.Errorf("provision user name on a hub without routes: 0x%02x", ack.ReasonCode)
	}
}

func TestAllowed(t *testing.T) {
	prov := &conn{route: &ProvisioningRoute{Username: provUser, RequestTopic: provReq, ResponseTopic: provResp}}
	dev := &conn{dev: &DeviceSession{DeviceID: "d"}}
	none := &conn{}
	for _, tc := range []struct {
		name  string
		c     *conn
		topic string
		write bool
		want  bool
	}{
		{"provisioning publishes its request", prov, provReq, true, true},
		{"provisioning subscribes its response", prov, provResp, false, true},
		{"provisioning publishes its response", prov, provResp, true, false},
		{"provisioning subscribes its request", prov, provReq, false, false},
		{"provisioning request with suffix", prov, provReq + "/x", true, false},
		{"provisioning response wildcard", prov, "/provision/#", false, false},
		{"provisioning device topic", prov, "v1/devices/me/telemetry", true, false},
		{"device telemetry", dev, "v1/devices/me/telemetry", true, true},
		{"device subscribes below me", dev, "v1/devices/me/rpc/request/+", false, true},
		{"device root", dev, "v1/devices/me", true, false},
		{"device other", dev, "v1/devices/mex/telemetry", true, false},
		{"device everything", dev, "#", false, false},
		{"device provisioning", dev, provReq, true, false},
		{"device empty topic", dev, "", true, false},
		{"unknown session", none, "v1/devices/me/telemetry", true, false},
	} {
		if got := allowed(tc.c, tc.topic, tc.write); got != tc.want {
			t.Errorf("%s: allowed(%q, write=%v) = %v, want %v", tc.name, tc.topic, tc.write, got, tc.want)
		}
	}
}
