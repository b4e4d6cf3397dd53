package hub

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// CONNACK codes of capacity refusals.
const (
	v3ServerUnavailable = 3
	v5ServerBusy        = 0x89
	v5QuotaExceeded     = 0x97
)

// TestProvisioningKeepaliveForced: a provisioning session asking for no
// keep-alive or a long one gets 60 s, and MQTT 5 clients are told so in
// the CONNACK; devices keep what they asked for.
func TestProvisioningKeepaliveForced(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		ask, want uint16
		told      bool
	}{
		{0, 60, true},
		{300, 60, true},
		{61, 60, true},
		{60, 60, false},
		{30, 30, false},
	} {
		_, ack := dialRaw(t, e.addr, 5, rawConnect{ClientID: "ka", Username: []byte(provUser), Clean: true, Keepalive: keepalive(tc.ask)})
		if ack.ReasonCode != 0 {
			t.Fatalf("keep-alive %d: refused 0x%02x", tc.ask, ack.ReasonCode)
		}
		if ack.Properties.ServerKeepAliveFlag != tc.told || (tc.told && ack.Properties.ServerKeepAlive != tc.want) {
			t.Errorf("keep-alive %d: CONNACK Server Keep Alive %v %d, want %v %d", tc.ask, ack.Properties.ServerKeepAliveFlag, ack.Properties.ServerKeepAlive, tc.told, tc.want)
		}
	}

	// MQTT 3.1.1 cannot be told, but the keep-alive applies.
	_, ack := dialRaw(t, e.addr, 4, rawConnect{ClientID: "ka-v4", Username: []byte(provUser), Clean: true, Keepalive: keepalive(0)})
	if ack.ReasonCode != 0 {
		t.Fatalf("v3.1.1: refused %d", ack.ReasonCode)
	}
	found := false
	for id, cl := range e.hub.srv.Clients.GetAll() {
		if strings.HasPrefix(id, "p/") && strings.HasSuffix(id, "/ka-v4") {
			found = true
			if cl.State.Keepalive != 60 {
				t.Errorf("v3.1.1 provisioning session keep-alive %d, want 60", cl.State.Keepalive)
			}
		}
	}
	if !found {
		t.Fatal("v3.1.1 provisioning session not found")
	}

	// A device asking for none keeps none.
	tok, _, _ := e.tokenDevice()
	_, ack = dialRaw(t, e.addr, 5, rawConnect{ClientID: "dev", Username: []byte(tok), Clean: true, Keepalive: keepalive(0)})
	if ack.ReasonCode != 0 || ack.Properties.ServerKeepAliveFlag {
		t.Errorf("device: CONNACK 0x%02x, Server Keep Alive %v", ack.ReasonCode, ack.Properties.ServerKeepAliveFlag)
	}
}

// TestProvisioningSessionLifetime: provisioning sessions are disconnected
// when their lifetime is over (MQTT 5: reason 0xA0); devices are not.
func TestProvisioningSessionLifetime(t *testing.T) {
	const lifetime = 300 * time.Millisecond
	e := newEnv(t, func(o *Options) { o.ProvisioningSessionLifetime = lifetime })
	tok, _, _ := e.tokenDevice()
	_, dev := connectCode(t, e, 4, rawConnect{ClientID: "dev", Username: []byte(tok), Keepalive: keepalive(0)})
	start := time.Now()
	v5, _ := dialRaw(t, e.addr, 5, rawConnect{ClientID: "idle-v5", Username: []byte(provUser), Clean: true, Keepalive: keepalive(0)})
	v4, _ := dialRaw(t, e.addr, 4, rawConnect{ClientID: "idle-v4", Username: []byte(provUser), Clean: true, Keepalive: keepalive(0)})
	v5.subscribe(provResp, 1)

	d := v5.waitClosed()
	if d == nil || d.ReasonCode != packets.ErrMaxConnectTime.Code {
		t.Errorf("MQTT 5: DISCONNECT %+v, want reason 0x%02x", d, packets.ErrMaxConnectTime.Code)
	}
	v4.waitClosed()
	if took := time.Since(start); took < lifetime {
		t.Errorf("disconnected after %v, before the lifetime %v", took, lifetime)
	}
	eventually(t, "provisioning sessions forgotten", func() bool { return e.hub.ConnectedSessions() == 1 })
	time.Sleep(lifetime)
	dev.sync() // the device is still connected
	whoIs(t, e, dev)
}

// TestProvisioningLifetimeWaitsForAnswer: a request being handled when
// the lifetime is over still gets its answer; then the session is
// disconnected.
func TestProvisioningLifetimeWaitsForAnswer(t *testing.T) {
	const lifetime = 200 * time.Millisecond
	e := newEnv(t, func(o *Options) { o.ProvisioningSessionLifetime = lifetime })
	cl, release := slowRequest(t, e, 5)
	time.Sleep(2 * lifetime)
	close(release)
	if got := cl.expect(packets.Publish); string(got.Payload) != "committed" {
		t.Fatalf("got %q", got.Payload)
	}
	if d := cl.waitClosed(); d == nil || d.ReasonCode != packets.ErrMaxConnectTime.Code {
		t.Errorf("DISCONNECT %+v, want reason 0x%02x", d, packets.ErrMaxConnectTime.Code)
	}
}

// TestProvisioningSessionCapPerHost: past the per-host cap, a source's
// provisioning CONNECTs are refused (MQTT 5: 0x97, MQTT 3: 3) and
// counted; other sources and devices are still served, and a freed slot
// is reused.
func TestProvisioningSessionCapPerHost(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxProvisioningSessionsPerHost = 2 })
	var first *rawClient
	for i := range 2 {
		cl, ack := dialRaw(t, e.addr, 4, rawConnect{ClientID: "p", Username: []byte(provUser), Clean: true})
		if ack.ReasonCode != 0 {
			t.Fatalf("session %d refused: %d", i, ack.ReasonCode)
		}
		if first == nil {
			first = cl
		}
	}
	if code, _ := connectCode(t, e, 5, rawConnect{ClientID: "p", Username: []byte(provUser)}); code != v5QuotaExceeded {
		t.Errorf("MQTT 5 over the cap: 0x%02x, want 0x%02x", code, v5QuotaExceeded)
	}
	if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "p", Username: []byte(provUser)}); code != v3ServerUnavailable {
		t.Errorf("MQTT 3.1.1 over the cap: %d, want %d", code, v3ServerUnavailable)
	}
	if n := e.hub.RefusedConnections(RefusedProvisioningSessionsPerHost); n != 2 {
		t.Errorf("RefusedConnections(per host) = %d, want 2", n)
	}
	if n := e.hub.RefusedConnections(RefusedProvisioningSessions) + e.hub.RefusedConnections(RefusedMaxClients); n != 0 {
		t.Errorf("other refusals counted: %d", n)
	}

	// Another source (127.0.0.2 is loopback too on Linux).
	if c, err := net.Dial("tcp4", e.addr); err == nil {
		c.Close()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		if c, err := d.Dial("tcp", e.addr); err != nil {
			t.Logf("cannot connect from 127.0.0.2 (%v): other source not tested", err)
		} else {
			c.Close()
			if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "p", Username: []byte(provUser), From: "127.0.0.2"}); code != 0 {
				t.Errorf("other source refused: %d", code)
			}
		}
	}

	// Devices are not provisioning sessions.
	tok, _, _ := e.tokenDevice()
	if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "dev", Username: []byte(tok)}); code != 0 {
		t.Errorf("device refused: %d", code)
	}

	// A slot freed is reused.
	first.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	first.waitClosed()
	eventually(t, "slot freed", func() bool {
		code, _ := connectCode(t, e, 4, rawConnect{ClientID: "p", Username: []byte(provUser)})
		return code == 0
	})
}

// TestProvisioningSessionCapTotal: past MaxProvisioningSessions,
// provisioning CONNECTs are refused (MQTT 5: 0x89, MQTT 3: 3) and
// counted, whatever their source.
func TestProvisioningSessionCapTotal(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxProvisioningSessions = 2; o.MaxProvisioningSessionsPerHost = 100 })
	for i := range 2 {
		if _, ack := dialRaw(t, e.addr, 5, rawConnect{ClientID: "p", Username: []byte(provUser), Clean: true}); ack.ReasonCode != 0 {
			t.Fatalf("session %d refused: 0x%02x", i, ack.ReasonCode)
		}
	}
	if code, _ := connectCode(t, e, 5, rawConnect{ClientID: "p", Username: []byte(provUser)}); code != v5ServerBusy {
		t.Errorf("MQTT 5 over the cap: 0x%02x, want 0x%02x", code, v5ServerBusy)
	}
	if code, _ := connectCode(t, e, 3, rawConnect{ClientID: "p", Username: []byte(provUser)}); code != v3ServerUnavailable {
		t.Errorf("MQTT 3.1 over the cap: %d, want %d", code, v3ServerUnavailable)
	}
	if n := e.hub.RefusedConnections(RefusedProvisioningSessions); n != 2 {
		t.Errorf("RefusedConnections(provisioning) = %d, want 2", n)
	}
	tok, _, _ := e.tokenDevice()
	if code, _ := connectCode(t, e, 5, rawConnect{ClientID: "dev", Username: []byte(tok)}); code != 0 {
		t.Errorf("device refused: 0x%02x", code)
	}
	if n := e.hub.RefusedConnections("no-such-reason"); n != 0 {
		t.Errorf("unknown reason counted %d", n)
	}
}

// TestMaxClientsRefusals: MaxClients counts devices and provisioning
// sessions together; refusals are 0x89 (MQTT 5) or 3 (MQTT 3) and
// counted; a device taking over its own session is let in.
func TestMaxClientsRefusals(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxClients = 2 })
	if got := e.hub.opts.MaxProvisioningSessions; got != 1 {
		t.Errorf("default provisioning cap with MaxClients 2: %d, want 1", got)
	}
	tok, _, _ := e.tokenDevice()
	if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "one", Username: []byte(tok)}); code != 0 {
		t.Fatalf("device refused: %d", code)
	}
	if code, _ := connectCode(t, e, 5, rawConnect{ClientID: "p", Username: []byte(provUser)}); code != 0 {
		t.Fatalf("provisioning session refused: 0x%02x", code)
	}
	if code, _ := connectCode(t, e, 5, rawConnect{ClientID: "two", Username: []byte(tok)}); code != v5ServerBusy {
		t.Errorf("MQTT 5 over MaxClients: 0x%02x, want 0x%02x", code, v5ServerBusy)
	}
	if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "two", Username: []byte(tok)}); code != v3ServerUnavailable {
		t.Errorf("MQTT 3.1.1 over MaxClients: %d, want %d", code, v3ServerUnavailable)
	}
	if n := e.hub.RefusedConnections(RefusedMaxClients); n != 2 {
		t.Errorf("RefusedConnections(max clients) = %d, want 2", n)
	}
	// Same device, same client id: a takeover, not one more session.
	code, cl := connectCode(t, e, 4, rawConnect{ClientID: "one", Username: []byte(tok)})
	if code != 0 {
		t.Fatalf("takeover at the cap refused: %d", code)
	}
	whoIs(t, e, cl)
	eventually(t, "taken-over session gone", func() bool { return e.hub.ConnectedSessions() == 2 })
}

// TestMaxClientsConcurrent: concurrent CONNECTs cannot overshoot
// MaxClients.
func TestMaxClientsConcurrent(t *testing.T) {
	const max, n = 5, 30
	e := newEnv(t, func(o *Options) { o.MaxClients = max })
	tok, _, _ := e.tokenDevice()
	codes := make(chan byte, n)
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range n {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", e.addr, waitLimit)
			if err != nil {
				t.Error(err)
				return
			}
			connsMu.Lock()
			conns = append(conns, c)
			connsMu.Unlock()
			var buf bytes.Buffer
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4, Connect: packets.ConnectParams{
				ProtocolName: []byte("MQTT"), ClientIdentifier: "c" + string(rune('a'+i)), Clean: true, Keepalive: 30,
				Username: []byte(tok), UsernameFlag: true,
			}}
			if err := pk.ConnectEncode(&buf); err != nil {
				t.Error(err)
				return
			}
			c.SetDeadline(time.Now().Add(waitLimit))
			if _, err := c.Write(buf.Bytes()); err != nil {
				t.Error(err)
				return
			}
			// CONNACK (3.1.1): 0x20 0x02 flags code.
			ack := make([]byte, 4)
			if _, err := io.ReadFull(c, ack); err != nil {
				t.Error(err)
				return
			}
			codes <- ack[3]
		})
	}
	wg.Wait()
	close(codes)
	accepted, refused := 0, 0
	for c := range codes {
		switch c {
		case 0:
			accepted++
		case v3ServerUnavailable:
			refused++
		default:
			t.Errorf("code %d", c)
		}
	}
	if accepted != max || refused != n-max {
		t.Errorf("%d accepted, %d refused; want %d and %d", accepted, refused, max, n-max)
	}
	if got := e.hub.RefusedConnections(RefusedMaxClients); got != uint64(refused) {
		t.Errorf("RefusedConnections = %d, want %d", got, refused)
	}
}

// TestProvisioningAnswerSubscriptionIdentifier: the answer carries the
// MQTT 5 subscription identifier of the session's own subscription.
func TestProvisioningAnswerSubscriptionIdentifier(t *testing.T) {
	e := newEnv(t)
	// Idle sessions subscribed to the same topic do not matter.
	for range 5 {
		idle, _ := dialRaw(t, e.addr, 5, rawConnect{ClientID: "idle", Username: []byte(provUser), Clean: true})
		idle.subscribe(provResp, 1)
	}
	cl, _ := dialRaw(t, e.addr, 5, rawConnect{ClientID: "sid", Username: []byte(provUser), Clean: true})
	cl.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    cl.id(),
		Filters:     packets.Subscriptions{{Filter: provResp, Qos: 1}},
		Properties:  packets.Properties{SubscriptionIdentifier: []int{7}},
	})
	if ack := cl.expect(packets.Suback); len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", ack.ReasonCodes)
	}
	cl.publish(provReq, 0, []byte("x"), packets.Properties{})
	got := cl.expect(packets.Publish)
	if string(got.Payload) != "answer:x" || got.FixedHeader.Qos != 1 || !slices.Equal(got.Properties.SubscriptionIdentifier, []int{7}) {
		t.Errorf("answer %q QoS %d identifiers %v", got.Payload, got.FixedHeader.Qos, got.Properties.SubscriptionIdentifier)
	}
}

func TestFilterMatches(t *testing.T) {
	for _, tc := range []struct {
		f, t string
		want bool
	}{
		{"/provision/response", "/provision/response", true},
		{"/provision/response", "/provision/response/x", false},
		{"/provision/response", "/provision", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/+", "a/", true},
		{"a/+", "a", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"+", "/", false},
		{"+/+", "/", true},
		{"$share/g/a", "a", false},
		{"v1/devices/me/rpc/request/+", "v1/devices/me/rpc/request/42", true},
		{"v1/devices/me/rpc/request/+", "v1/devices/me/rpc/request/42/x", false},
	} {
		if got := filterMatches(tc.f, tc.t); got != tc.want {
			t.Errorf("filterMatches(%q, %q) = %v, want %v", tc.f, tc.t, got, tc.want)
		}
	}
}

func TestSourceKey(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:1883":                 "192.0.2.7",
		"[::ffff:192.0.2.7]:1883":        "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:1883":    "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:9":       "2001:db8:1:2::/64",
		"[fe80::1%eth0]:1883":            "fe80::/64",
		"not-an-address":                 "not-an-address",
		"pipe":                           "pipe",
		"[2001:db8:1:3:3:4:5:6]:1883":    "2001:db8:1:3::/64",
		"198.51.100.1:65535":             "198.51.100.1",
		"[2001:db8::abcd]:1883":          "2001:db8::/64",
		"[::1]:1883":                     "::/64",
		"127.0.0.1:1":                    "127.0.0.1",
		"[2001:db8:0:0:1:0:0:1]:1":       "2001:db8::/64",
		"[2001:0db8:0000:0000::1]:12345": "2001:db8::/64",
	} {
		if got := sourceKey(addr); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", addr, got, want)
		}
	}
}

// TestPendingConnectionCaps: connections that never send CONNECT hold a
// bounded number of slots, in all and per source host; past the caps a new
// connection is closed unread, and a CONNECT frees its slot.
func TestPendingConnectionCaps(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxPendingConnections = 5; o.MaxPendingConnectionsPerHost = 3 })
	idle := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedUnread reports whether the server closed c without waiting
	// for a CONNECT (a kept connection just stays silent).
	closedUnread := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	waitRefused := func(reason RefusalReason, want uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for e.hub.RefusedConnections(reason) != want {
			if time.Now().After(deadline) {
				t.Fatalf("RefusedConnections(%s) = %d, want %d", reason, e.hub.RefusedConnections(reason), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	var local []net.Conn
	for range 3 {
		local = append(local, idle("127.0.0.1"))
	}
	waitRefused(RefusedPendingConnectionsPerHost, 0)
	if c := idle("127.0.0.1"); !closedUnread(c) {
		t.Fatal("a 4th idle connection from one host was kept")
	}
	waitRefused(RefusedPendingConnectionsPerHost, 1)
	for _, c := range local {
		if closedUnread(c) {
			t.Fatal("a connection within the per-host cap was closed")
		}
	}
	idle("127.0.0.2")
	idle("127.0.0.2")
	if c := idle("127.0.0.3"); !closedUnread(c) {
		t.Fatal("a 6th idle connection in all was kept")
	}
	waitRefused(RefusedPendingConnections, 1)

	// A connection that sends its CONNECT leaves the pending count.
	local[0].Close()
	eventually(t, "the closed connection's slot to be freed", func() bool {
		e.hub.conns.mu.Lock()
		defer e.hub.conns.mu.Unlock()
		return e.hub.conns.pending == 4
	})
	tok, _, _ := e.tokenDevice()
	dialRaw(t, e.addr, 4, rawConnect{ClientID: "pending-dev", Username: []byte(tok), Clean: true})
	if c := idle("127.0.0.1"); closedUnread(c) {
		t.Fatal("a slot freed by a CONNECT was not reusable")
	}
}
