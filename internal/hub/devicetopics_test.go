package hub

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/device"
)

// scriptedRefusal is the test handler's answer to a payload: "refuse:KIND"
// returns the error of that kind, "refuse:panic" panics, anything else is
// accepted.
func scriptedRefusal(payload string) error {
	kind, ok := strings.CutPrefix(payload, "refuse:")
	if !ok {
		return nil
	}
	switch kind {
	case "malformed":
		return fmt.Errorf("%w: not JSON", device.ErrBadPayload)
	case "keys":
		return fmt.Errorf("%w: 2000 keys", device.ErrTooManyKeys)
	case "large":
		return fmt.Errorf("%w: 100000 bytes", device.ErrTooLarge)
	case "rate":
		return fmt.Errorf("%w: at most 10/s", device.ErrRateLimited)
	case "busy":
		return device.ErrOverloaded
	case "panic":
		panic("scripted panic")
	}
	return fmt.Errorf("scripted failure %s", kind)
}

// presenceLog records Presence calls: +id for a connect, -id for a drop.
type presenceLog struct {
	mu     sync.Mutex
	events []string
}

func (p *presenceLog) Connected(id string)    { p.add("+" + id) }
func (p *presenceLog) Disconnected(id string) { p.add("-" + id) }
func (p *presenceLog) add(ev string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev)
}

func (p *presenceLog) snapshot() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.events...)
}

// TestDevicePublishRefusals checks how each refusal of a device topic
// handler reaches the device, by protocol version and QoS.
func TestDevicePublishRefusals(t *testing.T) {
	e := newEnv(t)
	const topic = DeviceTopicPrefix + "telemetry"
	type outcome struct {
		ack        byte // PUBACK reason code; 0 with closed false means accepted
		closed     bool // the server closed the connection
		disconnect byte // the DISCONNECT's reason code, when one was sent
	}
	cases := []struct {
		payload string
		v, qos  byte
		want    outcome
	}{
		{"ok", 5, 1, outcome{ack: 0x00}},
		{"refuse:malformed", 5, 1, outcome{ack: 0x99}},
		{"refuse:keys", 5, 1, outcome{ack: 0x99}},
		{"refuse:rate", 5, 1, outcome{ack: 0x97}},
		{"refuse:busy", 5, 1, outcome{ack: 0x97}},
		{"refuse:other", 5, 1, outcome{ack: 0x80}},
		{"refuse:panic", 5, 1, outcome{ack: 0x80}},
		{"refuse:large", 5, 1, outcome{closed: true, disconnect: 0x95}},
		{"refuse:large", 5, 0, outcome{closed: true, disconnect: 0x95}},
		{"refuse:rate", 5, 0, outcome{closed: true, disconnect: 0x96}},
		{"refuse:malformed", 5, 0, outcome{}},
		{"refuse:busy", 5, 0, outcome{}},
		{"refuse:malformed", 4, 1, outcome{}}, // dropped, acknowledged: MQTT 3 has no refusal
		{"refuse:rate", 4, 1, outcome{closed: true}},
		{"refuse:rate", 4, 0, outcome{closed: true}},
		{"refuse:busy", 4, 1, outcome{closed: true}}, // unacknowledged: resent after reconnecting
		{"refuse:busy", 4, 0, outcome{}},
		{"refuse:large", 4, 1, outcome{closed: true}},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/v%d/qos%d", tc.payload, tc.v, tc.qos), func(t *testing.T) {
			tok, _, _ := e.tokenDevice()
			cl, connack := dialRaw(t, e.addr, tc.v, rawConnect{ClientID: "dev", Username: []byte(tok), Clean: true})
			if connack.ReasonCode != 0 {
				t.Fatalf("CONNACK %#x", connack.ReasonCode)
			}
			ack, ok := cl.publish(topic, tc.qos, []byte(tc.payload), packets.Properties{})
			var got outcome
			switch {
			case !ok:
				got.closed = true
				if ack.FixedHeader.Type == packets.Disconnect {
					got.disconnect = ack.ReasonCode
				}
			case tc.qos == 1:
				got.ack = ack.ReasonCode
				if ack.ReasonCode >= 0x80 && ack.Properties.ReasonString == "" {
					t.Errorf("refusal without a reason string")
				}
			}
			if ok {
				// Still open? A PINGREQ answers, or the close shows.
				if tc.want.closed {
					if d := cl.waitClosed(); d != nil {
						got.disconnect = d.ReasonCode
					}
					got.closed = true
				} else {
					cl.sync()
				}
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestDeliverToDevice checks that a message for a device reaches each of
// its subscribed sessions, and only them.
func TestDeliverToDevice(t *testing.T) {
	e := newEnv(t)
	const topic = DeviceTopicPrefix + "attributes"
	tokA, devA, _ := e.tokenDevice()
	tokB, devB, _ := e.tokenDevice()
	a1, _ := dialRaw(t, e.addr, 5, rawConnect{ClientID: "a1", Username: []byte(tokA), Clean: true})
	a2, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "a2", Username: []byte(tokA), Clean: true})
	a3, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "a3", Username: []byte(tokA), Clean: true}) // not subscribed
	b, _ := dialRaw(t, e.addr, 5, rawConnect{ClientID: "b", Username: []byte(tokB), Clean: true})
	a1.subscribe(topic, 1)
	a2.subscribe(DeviceTopicPrefix+"#", 0)
	b.subscribe(topic, 1)

	if n := e.hub.DeliverToDevice(devA.ID, topic, []byte(`{"k":1}`)); n != 2 {
		t.Fatalf("delivered to %d sessions, want 2", n)
	}
	for name, cl := range map[string]*rawClient{"a1": a1, "a2": a2} {
		pubs := cl.sync()
		if len(pubs) != 1 || pubs[0].TopicName != topic || string(pubs[0].Payload) != `{"k":1}` {
			t.Errorf("%s got %v", name, pubs)
		}
	}
	if pubs := a3.sync(); len(pubs) != 0 {
		t.Errorf("unsubscribed session got %d messages", len(pubs))
	}
	if pubs := b.sync(); len(pubs) != 0 {
		t.Errorf("another device got %d messages", len(pubs))
	}
	if n := e.hub.DeliverToDevice(devB.ID+"x", topic, []byte(`{}`)); n != 0 {
		t.Errorf("delivered %d messages to an unknown device", n)
	}
}

// TestPresence checks that Presence hears of each device session's start
// and end, and of no provisioning session.
func TestPresence(t *testing.T) {
	e := newEnv(t)
	tok, dev, _ := e.tokenDevice()
	cl, _ := dialRaw(t, e.addr, 5, rawConnect{ClientID: "dev", Username: []byte(tok), Clean: true})
	prov, _ := dialRaw(t, e.addr, 5, rawConnect{ClientID: "p", Username: []byte(provUser), Clean: true})
	cl.sync()
	prov.sync()
	cl.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	cl.waitClosed()
	prov.c.Close()
	want := []string{"+" + dev.ID, "-" + dev.ID}
	eventually(t, "presence events", func() bool { return fmt.Sprint(e.presence.snapshot()) == fmt.Sprint(want) })
}

// TestDeliverToAClientThatDoesNotRead: a session that stops reading is
// disconnected once a write to it stalls, instead of blocking the sender.
func TestDeliverToAClientThatDoesNotRead(t *testing.T) {
	e := newEnv(t)
	const topic = DeviceTopicPrefix + "attributes"
	tok, dev, _ := e.tokenDevice()
	cl, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "stuck", Username: []byte(tok), Clean: true, Keepalive: keepalive(0)})
	cl.subscribe(topic, 0)
	// From here on the client reads nothing.
	big := make([]byte, 200<<10)
	start := time.Now()
	for i := 0; ; i++ {
		if e.hub.DeliverToDevice(dev.ID, topic, big) == 0 {
			break
		}
		if time.Since(start) > 2*waitLimit {
			t.Fatalf("still delivering after %d messages and %v", i, time.Since(start))
		}
	}
	eventually(t, "the stuck session is gone", func() bool { return e.hub.ConnectedDevices() == 0 })
}
