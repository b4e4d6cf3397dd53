package hub

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestConnectTimeout(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.ConnectTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a connection that sent no CONNECT")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the hub kept a silent connection open")
	}
}

func TestMaxPacketSize(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxPacketSize = 1024 })
	tok, _, _ := e.tokenDevice()
	_, cl := connectCode(t, e, 4, rawConnect{ClientID: "big", Username: []byte(tok)})
	if _, ok := cl.publish("v1/devices/me/telemetry", 1, bytes.Repeat([]byte("x"), 900), packets.Properties{}); !ok {
		t.Fatal("publish below the limit refused")
	}
	e.nextDevicePub(t)
	if _, ok := cl.publish("v1/devices/me/telemetry", 1, bytes.Repeat([]byte("x"), 2048), packets.Properties{}); ok {
		t.Fatal("publish above the limit acknowledged")
	}
	cl.waitClosed()
}

func TestMaxClients(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxClients = 1 })
	tok, _, _ := e.tokenDevice()
	if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "one", Username: []byte(tok)}); code != 0 {
		t.Fatalf("first client refused: %d", code)
	}
	if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "two", Username: []byte(tok)}); code != 3 {
		t.Fatalf("second client: code %d, want 3 (server unavailable)", code)
	}
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	if err := e.hub.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	// A listener added after Start serves at once.
	addr, err := e.hub.ListenTCP("late", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, ack := dialRaw(t, addr.String(), 4, rawConnect{ClientID: "late", Username: []byte(provUser), Clean: true})
	if ack.ReasonCode != 0 {
		t.Fatalf("late listener: CONNACK %d", ack.ReasonCode)
	}
	if err := e.hub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := e.hub.ListenTCP("after", "127.0.0.1:0"); err == nil {
		t.Error("ListenTCP after Close succeeded")
	}
	if _, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		t.Error("listener still accepting after Close")
	}
	if n := e.hub.ConnectedSessions(); n != 0 {
		t.Errorf("%d sessions after Close", n)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without a store succeeded")
	}
}

func TestRouteRegistrationPanics(t *testing.T) {
	e := newEnv(t)
	for name, f := range map[string]func(){
		"duplicate user name": func() {
			e.hub.HandleProvisioning(ProvisioningRoute{Username: provUser, RequestTopic: "a", ResponseTopic: "b", Handle: func(_ context.Context, _ Session, p []byte) []byte { return p }})
		},
		"wildcard topic": func() {
			e.hub.HandleProvisioning(ProvisioningRoute{Username: "x", RequestTopic: "a/#", ResponseTopic: "b", Handle: func(_ context.Context, _ Session, p []byte) []byte { return p }})
		},
		"no handler": func() {
			e.hub.HandleProvisioning(ProvisioningRoute{Username: "y", RequestTopic: "a", ResponseTopic: "b"})
		},
		"device topic else": func() {
			e.hub.HandleDeviceTopic("v2/other", func(context.Context, DeviceSession, string, []byte) error { return nil })
		},
		"device topic twice": func() {
			e.hub.HandleDeviceTopic(DeviceTopicPrefix, func(context.Context, DeviceSession, string, []byte) error { return nil })
		},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecretsNotLogged: at debug level, nothing the hub or mochi logs
// contains a token, a password or a provisioning payload.
func TestSecretsNotLogged(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	tok, _, _ := e.tokenDevice()
	e.device("enabled", basicCred("basic-cid", "basic-user", "basic-password-123"))
	const provSecret = "provision-secret-456"

	// Token auth, a second CONNECT on a live connection (mochi logs the
	// packet), a refused publish.
	_, cl := connectCode(t, e, 4, rawConnect{ClientID: "tok", Username: []byte(tok), Password: []byte("token-password-789")})
	cl.publish("elsewhere", 1, []byte(provSecret), packets.Properties{})
	cl.waitClosed()
	_, cl = connectCode(t, e, 4, rawConnect{ClientID: "tok2", Username: []byte(tok)})
	cl.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{
		ProtocolName: []byte("MQTT"), ClientIdentifier: "tok2", Username: []byte(tok), UsernameFlag: true,
		Password: []byte("second-connect-password"), PasswordFlag: true, Keepalive: 30, Clean: true,
	}})
	cl.waitClosed()
	// Wrong and right basic passwords, an unknown token.
	connectCode(t, e, 5, rawConnect{ClientID: "basic-cid", Username: []byte("basic-user"), Password: []byte("basic-password-wrong")})
	connectCode(t, e, 5, rawConnect{ClientID: "basic-cid", Username: []byte("basic-user"), Password: []byte("basic-password-123")})
	connectCode(t, e, 4, rawConnect{ClientID: "x", Username: []byte("unknown-token-abc")})
	// A provisioning request, and one published where it may not go.
	_, pc := connectCode(t, e, 4, rawConnect{ClientID: "prov", Username: []byte(provUser), Password: []byte("prov-password")})
	pc.subscribe(provResp, 1)
	pc.publish(provReq, 1, []byte(provSecret), packets.Properties{})
	pc.expect(packets.Publish)
	pc.publish(provResp, 1, []byte(provSecret), packets.Properties{})
	pc.waitClosed()
	eventually(t, "sessions end", func() bool { return e.hub.ConnectedSessions() <= 1 })

	out := logs.String()
	if !strings.Contains(out, "connection refused") {
		t.Fatalf("expected refusals in the log, got:\n%s", out)
	}
	for _, s := range []string{tok, "token-password-789", "second-connect-password", "basic-password", "unknown-token-abc", provSecret, "prov-password"} {
		if strings.Contains(out, s) {
			t.Errorf("log contains %q", s)
		}
	}
}

// TestCloseLetsHandlersFinish: a request being handled when Close is
// called still gets its answer; then the session is closed.
func TestCloseLetsHandlersFinish(t *testing.T) {
	e := newEnv(t)
	cl, release := slowRequest(t, e, 4)

	closed := make(chan error, 1)
	go func() { closed <- e.hub.Close() }()
	eventually(t, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", e.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	if got := cl.expect(packets.Publish); string(got.Payload) != "committed" {
		t.Fatalf("got %q", got.Payload)
	}
	cl.waitClosed()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Close did not return")
	}
}

// slowRequest registers a provisioning route "slow" whose handler blocks
// until release is closed, connects a raw client of the given protocol
// version, sends one request and returns once the handler is running.
func slowRequest(t *testing.T, e *env, version byte) (cl *rawClient, release chan struct{}) {
	t.Helper()
	entered := make(chan struct{})
	release = make(chan struct{})
	e.hub.HandleProvisioning(ProvisioningRoute{
		Username: "slow", RequestTopic: provReq, ResponseTopic: provResp,
		Handle: func(ctx context.Context, _ Session, p []byte) []byte {
			close(entered)
			<-release
			return []byte("committed")
		},
	})
	cl, _ = dialRaw(t, e.addr, version, rawConnect{ClientID: "slow", Username: []byte("slow"), Clean: true})
	cl.subscribe(provResp, 1)
	cl.publish(provReq, 1, []byte("req"), packets.Properties{})
	<-entered
	return cl, release
}
