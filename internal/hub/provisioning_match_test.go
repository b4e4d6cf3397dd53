package hub

import (
	"context"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestProvisioningRouteWithParameters drives a route of the variable form
// (as Azure DPS needs): a user name matcher, a request topic prefix, a
// response filter, answers on topics the handler names, and the password
// kept for the handler.
func TestProvisioningRouteWithParameters(t *testing.T) {
	e := newEnv(t)
	type call struct {
		sess        Session
		topic, body string
	}
	calls := make(chan call, 10)
	e.hub.HandleProvisioning(ProvisioningRoute{
		MatchUsername:      func(u string) bool { return strings.Contains(u, "/registrations/") },
		RequestTopicPrefix: "$dps/registrations/",
		ResponseTopic:      "$dps/registrations/res/#",
		WithPassword:       true,
		HandleRequest: func(ctx context.Context, s Session, topic string, payload []byte) (string, []byte) {
			calls <- call{s, topic, string(payload)}
			rid := topic[strings.Index(topic, "$rid=")+5:]
			if rid == "silent" {
				return "", nil
			}
			return "$dps/registrations/res/202/?$rid=" + rid + "&retry-after=1", []byte("answer:" + string(payload))
		},
	})
	user := "0ne00000001/registrations/dev-1/api-version=2019-03-31&ClientVersion=test"
	for _, v := range []byte{4, 5} {
		cl, ack := dialRaw(t, e.addr, v, rawConnect{ClientID: "dev-1", Username: []byte(user), Password: []byte("SharedAccessSignature sr=x"), Clean: true})
		if ack.ReasonCode != 0 {
			t.Fatalf("v%d: CONNACK %d, want success", v, ack.ReasonCode)
		}
		if got := cl.subscribe("$dps/registrations/res/#", 1); got != 1 {
			t.Fatalf("v%d: SUBACK %d, want 1", v, got)
		}
		if got := cl.subscribe("other/#", 1); got < 0x80 {
			t.Fatalf("v%d: SUBACK %d for a filter outside the route, want a refusal", v, got)
		}
		cl.publish("$dps/registrations/PUT/iotdps-register/?$rid=7", 1, []byte(`{"registrationId":"dev-1"}`), packets.Properties{})
		c := <-calls
		if c.sess.Username != user || c.sess.Password != "SharedAccessSignature sr=x" || c.topic != "$dps/registrations/PUT/iotdps-register/?$rid=7" {
			t.Fatalf("v%d: handler got user %q, password %q, topic %q", v, c.sess.Username, c.sess.Password, c.topic)
		}
		pk := cl.expect(packets.Publish)
		if pk.TopicName != "$dps/registrations/res/202/?$rid=7&retry-after=1" || string(pk.Payload) != `answer:{"registrationId":"dev-1"}` {
			t.Fatalf("v%d: answer %q on %q", v, pk.Payload, pk.TopicName)
		}
		if pk.FixedHeader.Qos == 1 {
			cl.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
		// No answer when the handler gives no topic; a topic outside the
		// prefix is not a request.
		cl.publish("$dps/registrations/PUT/iotdps-register/?$rid=silent", 1, nil, packets.Properties{})
		<-calls
		if pubs := cl.sync(); len(pubs) != 0 {
			t.Fatalf("v%d: %d answers to a request the handler did not answer", v, len(pubs))
		}
		if v == 5 {
			if ack, ok := cl.publish("elsewhere", 1, nil, packets.Properties{}); ok && ack.ReasonCode < 0x80 {
				t.Fatalf("publish outside the request prefix acknowledged with %d", ack.ReasonCode)
			}
		}
		cl.c.Close()
	}
	// The exact route still works beside it, and keeps no password.
	cl, ack := dialRaw(t, e.addr, 4, rawConnect{ClientID: "tb", Username: []byte(provUser), Password: []byte("secret"), Clean: true})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %d on the exact route", ack.ReasonCode)
	}
	cl.subscribe(provResp, 1)
	cl.publish(provReq, 1, []byte("x"), packets.Properties{})
	if pc := e.nextProv(t); pc.sess.Password != "" || pc.sess.Username != provUser {
		t.Fatalf("exact route session = %+v", pc.sess)
	}
}
