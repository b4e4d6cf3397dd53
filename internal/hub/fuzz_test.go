package hub

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// FuzzHooks drives the hook methods with arbitrary CONNECT and PUBLISH
// contents, as mochi would after decoding them: whatever the input, no
// panic, and a refused CONNECT leaves no session behind.
func FuzzHooks(f *testing.F) {
	e := newEnv(f)
	tok, _, _ := e.tokenDevice()
	e.device("enabled", basicCred("cid", "user", "pw"))
	for _, seed := range []struct {
		v          byte
		cid        string
		user, pass []byte
		topic      string
		payload    []byte
	}{
		{4, "c", []byte(tok), nil, "v1/devices/me/telemetry", []byte(`{"t":1}`)},
		{5, "c", []byte(provUser), nil, provReq, []byte(`{"deviceName":"x"}`)},
		{4, "", []byte(provUser), []byte("x"), provResp, nil},
		{4, "cid", []byte("user"), []byte("pw"), "v1/devices/me/attributes", []byte("{}")},
		{4, "cid", []byte("user"), []byte("bad"), "#", nil},
		{3, "cid", nil, nil, "", nil},
		{0, "\xff\xfe", []byte{0xff, 0x00, 0xc3}, []byte{0}, "\x00", []byte{0xff}},
		{255, "x", []byte("c=x\x00u=y"), nil, "$SYS/broker", nil},
		{5, "cid", []byte(""), nil, "v1/devices/me/", nil},
	} {
		f.Add(seed.v, seed.cid, seed.user, seed.pass, seed.topic, seed.payload)
	}
	k := &hook{h: e.hub}
	f.Fuzz(func(t *testing.T, v byte, cid string, user, pass []byte, topic string, payload []byte) {
		pk := packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Connect},
			ProtocolVersion: v,
			Connect: packets.ConnectParams{
				ProtocolName:     []byte("MQTT"),
				ClientIdentifier: cid,
				Username:         user,
				UsernameFlag:     user != nil,
				Password:         pass,
				PasswordFlag:     pass != nil,
				Clean:            true,
				Keepalive:        30,
			},
		}
		cl := e.hub.srv.NewClient(nil, "fuzz", "", false)
		cl.ParseConnect("fuzz", pk)
		err := k.OnConnect(cl, pk)
		authenticated := k.OnConnectAuthenticate(cl, pk)
		if (err == nil) != authenticated {
			t.Fatalf("OnConnect error %v but OnConnectAuthenticate %v", err, authenticated)
		}
		for _, write := range []bool{false, true} {
			if k.OnACLCheck(cl, topic, write) && !authenticated {
				t.Fatalf("unauthenticated client allowed on %q", topic)
			}
		}
		pub := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: v % 3},
			TopicName:   topic,
			Payload:     payload,
			PacketID:    1,
		}
		if _, err := k.OnPublish(cl, pub); err != packets.CodeSuccessIgnore && err != packets.ErrRejectPacket {
			t.Fatalf("OnPublish returned %v: the publish could be forwarded", err)
		}
		k.OnPublished(cl, pub)
		k.OnDisconnect(cl, nil, true)
		if c := e.hub.sessions.lookup(cl); c != nil {
			t.Fatal("session kept after OnDisconnect")
		}
	})
}
