package hub

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// goroutinesPerSession waits (up to waitLimit) until the goroutines added
// since before come to at most want per session, and returns the last
// figure seen.
func goroutinesPerSession(before, sessions int, want float64) float64 {
	var per float64
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		per = float64(runtime.NumGoroutine()-before) / float64(sessions)
		if per <= want {
			break
		}
	}
	return per
}

// TestIdleSessionHoldsOneGoroutine: an idle session holds one goroutine,
// the one reading its packets, started shallow after the CONNECT exchange;
// a delivery starts a writer that ends once the queue is empty. Upstream
// mochi-mqtt holds two per session for its whole life (the writer, and the
// deep goroutine that ran the CONNECT exchange), which is what kept an idle
// device at 37 KiB; third_party/mochi-mqtt-server is patched for this.
func TestIdleSessionHoldsOneGoroutine(t *testing.T) {
	e := newEnv(t)
	const n = 40
	runtime.GC()
	before := runtime.NumGoroutine()
	clients := make([]*rawClient, n)
	devices := make([]string, n)
	for i := range clients {
		tok, dev, _ := e.tokenDevice()
		clients[i], _ = dialRaw(t, e.addr, 4, rawConnect{ClientID: fmt.Sprint("idle-", i), Username: []byte(tok)})
		devices[i] = dev.ID
		if rc := clients[i].subscribe(DeviceTopicPrefix+"attributes", 0); rc != 0 {
			t.Fatalf("SUBSCRIBE refused: 0x%02x", rc)
		}
	}
	if got := e.hub.ConnectedSessions(); got != n {
		t.Fatalf("hub counts %d sessions, want %d", got, n)
	}
	if per := goroutinesPerSession(before, n, 1.1); per > 1.1 {
		t.Fatalf("%.2f goroutines per idle session, want 1", per)
	}

	for i, id := range devices {
		if got := e.hub.DeliverToDevice(id, DeviceTopicPrefix+"attributes", []byte(`{"n":1}`)); got != 1 {
			t.Fatalf("delivered to %d sessions, want 1", got)
		}
		if pk := clients[i].expect(packets.Publish); string(pk.Payload) != `{"n":1}` {
			t.Fatalf("session %d got %q", i, pk.Payload)
		}
	}
	if per := goroutinesPerSession(before, n, 1.1); per > 1.1 {
		t.Fatalf("%.2f goroutines per session once deliveries are written, want 1: writers do not end", per)
	}
}
