package hub

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
)

// MQTT over WebSocket: a CONNECT split over two binary messages is one
// CONNECT; a text message ends the connection; an upgrade without the
// mqtt subprotocol still works (clients that send none).
func TestWebSocketTransport(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(e.hub.WebSocketHandler("ws"))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	dial := func(t *testing.T, subprotocols []string) *websocket.Conn {
		t.Helper()
		d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: waitLimit}
		ws, resp, err := d.Dial(url, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if len(subprotocols) > 0 && resp.Header.Get("Sec-WebSocket-Protocol") != "mqtt" {
			t.Fatalf("subprotocol %q, want mqtt", resp.Header.Get("Sec-WebSocket-Protocol"))
		}
		t.Cleanup(func() { ws.Close() })
		ws.SetReadDeadline(time.Now().Add(waitLimit))
		return ws
	}
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "ws-prov",
			UsernameFlag: true, Username: []byte(provUser)}}
	var buf bytes.Buffer
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()

	for _, sub := range [][]string{{"mqtt"}, nil} {
		ws := dial(t, sub)
		// The CONNECT in two messages: the stream is what counts.
		ws.WriteMessage(websocket.BinaryMessage, raw[:5])
		ws.WriteMessage(websocket.BinaryMessage, raw[5:])
		typ, msg, err := ws.ReadMessage()
		if err != nil || typ != websocket.BinaryMessage || len(msg) < 4 || msg[0]>>4 != packets.Connack || msg[3] != 0 {
			t.Fatalf("subprotocols %v: CONNACK %x (%d), %v; want an accepted CONNACK", sub, msg, typ, err)
		}
	}

	ws := dial(t, []string{"mqtt"})
	ws.WriteMessage(websocket.TextMessage, raw)
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Fatal("a CONNECT in a text message was answered; MQTT over WebSocket is binary")
	}
}
