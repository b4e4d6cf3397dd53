package hub

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestProvisioningRoundTripPaho(t *testing.T) {
	e := newEnv(t)
	for _, subQoS := range []byte{0, 1, 2} {
		for _, pubQoS := range []byte{0, 1, 2} {
			t.Run(fmt.Sprintf("sub%d-pub%d", subQoS, pubQoS), func(t *testing.T) {
				cid := fmt.Sprintf("prov-%d-%d", subQoS, pubQoS)
				pc := e.mustPaho(pahoConf{clientID: cid, username: provUser})
				if got := pc.subscribe(t, provResp, subQoS); got != subQoS {
					t.Fatalf("SUBACK granted %d, want %d", got, subQoS)
				}
				req := `{"deviceName":"` + cid + `"}`
				pc.publish(t, provReq, pubQoS, req)

				call := e.nextProv(t)
				if call.payload != req {
					t.Errorf("handler got %q, want %q", call.payload, req)
				}
				want := Session{ClientID: cid, Username: provUser, Listener: "mqtt", ProtocolVersion: 4}
				got := call.sess
				got.RemoteAddr = ""
				if !reflect.DeepEqual(got, want) {
					t.Errorf("handler session = %+v, want %+v", got, want)
				}
				if !strings.HasPrefix(call.sess.RemoteAddr, "127.0.0.1:") {
					t.Errorf("RemoteAddr = %q", call.sess.RemoteAddr)
				}

				m := pc.next(t)
				if m.Topic() != provResp || string(m.Payload()) != "answer:"+req {
					t.Errorf("got %q on %q, want the answer on %s", m.Payload(), m.Topic(), provResp)
				}
				if want := min(subQoS, 1); m.Qos() != want {
					t.Errorf("answer QoS %d, want %d", m.Qos(), want)
				}
				// The same connection can go on: a second request.
				pc.publish(t, provReq, pubQoS, "again")
				e.nextProv(t)
				if m := pc.next(t); string(m.Payload()) != "answer:again" {
					t.Errorf("second answer %q", m.Payload())
				}
			})
		}
	}
}

func TestProvisioningMQTT5CorrelationData(t *testing.T) {
	e := newEnv(t)
	cl, ack := dialRaw(t, e.addr, 5, rawConnect{ClientID: "v5", Username: []byte(provUser), Clean: true})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK reason 0x%02x", ack.ReasonCode)
	}
	if rc := cl.subscribe(provResp, 1); rc != 1 {
		t.Fatalf("SUBACK 0x%02x", rc)
	}
	props := packets.Properties{CorrelationData: []byte("corr-42"), ResponseTopic: provResp}
	puback, ok := cl.publish(provReq, 1, []byte("req"), props)
	if !ok || puback.ReasonCode != 0 {
		t.Fatalf("PUBACK ok=%v reason 0x%02x", ok, puback.ReasonCode)
	}
	got := cl.expect(packets.Publish)
	if got.TopicName != provResp || string(got.Payload) != "answer:req" {
		t.Fatalf("got %q on %q", got.Payload, got.TopicName)
	}
	if !bytes.Equal(got.Properties.CorrelationData, []byte("corr-42")) {
		t.Errorf("correlation data %q, want corr-42", got.Properties.CorrelationData)
	}
	if e.nextProv(t).sess.ProtocolVersion != 5 {
		t.Error("handler session protocol version is not 5")
	}
}

// TestProvisioningAnswersAreIsolated: several provisioning sessions
// subscribed to the same response topic, plus one that only listens; each
// gets exactly its own answers.
func TestProvisioningAnswersAreIsolated(t *testing.T) {
	e := newEnv(t)
	eaves, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "eavesdropper", Username: []byte(provUser), Clean: true})
	if rc := eaves.subscribe(provResp, 1); rc != 1 {
		t.Fatalf("SUBACK 0x%02x", rc)
	}
	if rc := eaves.subscribe(provReq, 1); rc != 0x80 {
		t.Fatalf("eavesdropper subscribed to the request topic: 0x%02x", rc)
	}

	const clients, requests = 6, 5
	pcs := make([]*pahoClient, clients)
	for i := range pcs {
		pcs[i] = e.mustPaho(pahoConf{clientID: fmt.Sprintf("iso-%d", i), username: provUser})
		pcs[i].subscribe(t, provResp, 1)
	}
	var wg sync.WaitGroup
	for i, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range requests {
				tok := pc.Publish(provReq, 1, false, fmt.Sprintf("c%d-r%d", i, r))
				tok.WaitTimeout(waitLimit)
			}
		}()
	}
	wg.Wait()
	for i, pc := range pcs {
		for range requests {
			m := pc.next(t)
			if p := string(m.Payload()); !strings.HasPrefix(p, fmt.Sprintf("answer:c%d-", i)) {
				t.Errorf("client %d received %q", i, p)
			}
		}
	}
	// Every answer has been written; one more round trip per client
	// flushes anything else that was sent to it.
	for i, pc := range pcs {
		pc.publish(t, provReq, 1, "sync")
		if m := pc.next(t); string(m.Payload()) != "answer:sync" {
			t.Errorf("client %d: got %q before its sync answer", i, m.Payload())
		}
	}
	if pubs := eaves.sync(); len(pubs) != 0 {
		t.Errorf("eavesdropper received %d messages, first %q", len(pubs), pubs[0].Payload)
	}
}

func TestProvisioningSessionIsConfined(t *testing.T) {
	e := newEnv(t)
	for _, v := range []byte{4, 5} {
		denied := byte(0x80)
		if v == 5 {
			denied = 0x87
		}
		cl, _ := dialRaw(t, e.addr, v, rawConnect{ClientID: fmt.Sprintf("conf-%d", v), Username: []byte(provUser), Clean: true})
		for _, tc := range []struct {
			filter string
			want   byte
		}{
			{"#", denied},
			{"+/#", denied},
			{"$SYS/#", denied},
			{provReq, denied},
			{"/provision/+", denied},
			{"v1/devices/me/telemetry", denied},
			{"$share/g" + provResp, denied},
			{provResp, 1},
		} {
			if got := cl.subscribe(tc.filter, 1); got != tc.want {
				t.Errorf("v%d: SUBSCRIBE %q = 0x%02x, want 0x%02x", v, tc.filter, got, tc.want)
			}
		}
		// QoS 0 publishes elsewhere are dropped without a word.
		cl.publish("v1/devices/me/telemetry", 0, []byte("x"), packets.Properties{})
		cl.publish(provResp, 0, []byte("forged"), packets.Properties{})
		if v == 5 {
			for _, topic := range []string{provResp, "v1/devices/me/telemetry", "other"} {
				ack, ok := cl.publish(topic, 1, []byte("x"), packets.Properties{})
				if !ok || ack.ReasonCode != packets.ErrNotAuthorized.Code {
					t.Errorf("v5 PUBLISH to %q: ok=%v reason 0x%02x, want PUBACK 0x87", topic, ok, ack.ReasonCode)
				}
			}
		}
		if _, ok := cl.publish(provReq, 1, []byte("fine"), packets.Properties{}); !ok {
			t.Fatalf("v%d: request refused", v)
		}
		if call := e.nextProv(t); call.payload != "fine" {
			t.Errorf("v%d: handler got %q, want only the request", v, call.payload)
		}
		if got := cl.expect(packets.Publish); string(got.Payload) != "answer:fine" {
			t.Errorf("v%d: got %q", v, got.Payload)
		}
		if pubs := cl.sync(); len(pubs) != 0 {
			t.Errorf("v%d: received %d more messages", v, len(pubs))
		}
	}

	// MQTT 3.1.1 has no negative PUBACK: a refused QoS 1 publish ends the
	// connection.
	cl, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "conf-v4-qos1", Username: []byte(provUser), Clean: true})
	if _, ok := cl.publish(provResp, 1, []byte("forged"), packets.Properties{}); ok {
		t.Error("v4 QoS 1 publish to the response topic was acknowledged")
	}
	cl.waitClosed()
}

// TestProvisioningWillIgnored: a provisioning session's last will on the
// response topic would reach every provisioning session; it is dropped.
func TestProvisioningWillIgnored(t *testing.T) {
	e := newEnv(t)
	eaves, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "eaves", Username: []byte(provUser), Clean: true})
	eaves.subscribe(provResp, 1)
	for i, topic := range []string{provResp, "v1/devices/me/telemetry", "anything"} {
		forger, ack := dialRaw(t, e.addr, 4, rawConnect{
			ClientID: fmt.Sprintf("forger-%d", i),
			Username: []byte(provUser),
			Clean:    true,
			Will:     &packets.Packet{TopicName: topic, Payload: []byte(`{"status":"SUCCESS","credentialsValue":"forged"}`)},
		})
		if ack.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
		}
		forger.c.Close() // no DISCONNECT: the will would fire
	}
	eventually(t, "forgers' sessions end", func() bool { return e.hub.ConnectedSessions() == 1 })
	if pubs := eaves.sync(); len(pubs) != 0 {
		t.Errorf("the will was delivered: %q", pubs[0].Payload)
	}
}

func TestProvisioningWithoutSubscriptionGetsNoAnswer(t *testing.T) {
	e := newEnv(t)
	cl, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "nosub", Username: []byte(provUser), Clean: true})
	if _, ok := cl.publish(provReq, 1, []byte("req"), packets.Properties{}); !ok {
		t.Fatal("request refused")
	}
	e.nextProv(t)
	if pubs := cl.sync(); len(pubs) != 0 {
		t.Errorf("got %d messages without a subscription", len(pubs))
	}
}

// TestProvisioningSessionsShareNothing: provisioning sessions that use
// the same client id (even with clean session off) coexist and never see
// each other's state, and nothing is kept after a disconnection.
func TestProvisioningSessionsShareNothing(t *testing.T) {
	e := newEnv(t)
	a, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "fixed-id", Username: []byte(provUser)})
	a.subscribe(provResp, 1)
	if _, ok := a.publish(provReq, 1, []byte("secret-answer"), packets.Properties{}); !ok {
		t.Fatal("request refused")
	}
	e.nextProv(t)
	a.expect(packets.Publish) // the answer, left unacknowledged

	b, ack := dialRaw(t, e.addr, 4, rawConnect{ClientID: "fixed-id", Username: []byte(provUser)})
	if ack.SessionPresent {
		t.Error("second session with the same client id: session present")
	}
	if pubs := b.sync(); len(pubs) != 0 {
		t.Errorf("second session received %q", pubs[0].Payload)
	}
	// a is still there and still served.
	if _, ok := a.publish(provReq, 1, []byte("still-here"), packets.Properties{}); !ok {
		t.Fatal("first session's request refused")
	}
	e.nextProv(t)
	if got := a.expect(packets.Publish); string(got.Payload) != "answer:still-here" {
		t.Errorf("first session got %q", got.Payload)
	}

	for _, cl := range []*rawClient{a, b} {
		cl.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		cl.waitClosed()
	}
	eventually(t, "sessions end", func() bool { return e.hub.ConnectedSessions() == 0 })
	if n := e.hub.srv.Clients.Len(); n != 0 {
		t.Errorf("mochi keeps %d provisioning sessions after they ended", n)
	}
	c, ack := dialRaw(t, e.addr, 4, rawConnect{ClientID: "fixed-id", Username: []byte(provUser)})
	if ack.SessionPresent {
		t.Error("reconnect: session present")
	}
	if pubs := c.sync(); len(pubs) != 0 {
		t.Errorf("reconnect: received %q", pubs[0].Payload)
	}
}
