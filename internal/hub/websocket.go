package hub

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// MQTT over WebSocket (MQTT 3.1.1 section 6): each binary WebSocket
// message carries MQTT bytes. The Azure IoT SDKs use it on port 443 at
// /$iothub/websocket for DPS and IoT Hub alike, and browsers' MQTT clients
// have nothing else.

// WebSocketSubprotocols are the subprotocols offered: "mqtt" (MQTT 3.1.1
// and 5, and the Azure SDKs) and "mqttv3.1".
var WebSocketSubprotocols = []string{"mqtt", "mqttv3.1"}

// WebSocketHandler upgrades HTTP requests to MQTT over WebSocket and
// serves each as a connection of the listener named name: the same
// authentication, caps and ACLs as the TCP listeners. Over HTTPS the TLS
// client certificate, if any, authenticates as on MQTTS.
func (h *Hub) WebSocketHandler(name string) http.Handler {
	up := websocket.Upgrader{
		Subprotocols:    WebSocketSubprotocols,
		ReadBufferSize:  4 << 10,
		WriteBufferSize: 4 << 10,
		// Devices, not browsers with cookies: the session authenticates
		// itself in its CONNECT, whatever page opened it.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade answered the client
		}
		ws.SetReadLimit(int64(h.opts.MaxPacketSize) + 16)
		c := &wsConn{ws: ws, tlsState: r.TLS}
		// What the TCP listeners' deadlineListener does: the CONNECT must
		// come in time (this also clears the HTTP server's deadlines).
		c.SetDeadline(time.Now().Add(h.opts.ConnectTimeout))
		h.serve(name, c)
	})
}

// wsConn is a WebSocket connection as a net.Conn of MQTT bytes.
type wsConn struct {
	ws       *websocket.Conn
	tlsState *tls.ConnectionState // nil without TLS
	r        io.Reader            // the message being read
	wmu      sync.Mutex           // one writer at a time, as websocket requires
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				// MQTT over WebSocket is binary only [MQTT-6.0.0-1].
				c.ws.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseUnsupportedData, "MQTT needs binary messages"), time.Now().Add(time.Second))
				return 0, io.ErrUnexpectedEOF
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetDeadline(t time.Time) error      { return c.ws.NetConn().SetDeadline(t) }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.NetConn().SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.NetConn().SetWriteDeadline(t) }

// tlsOf returns the TLS state of a connection, if it runs over TLS: a
// TLS listener's, or a WebSocket's upgraded from HTTPS.
func tlsOf(c net.Conn) (tls.ConnectionState, bool) {
	switch c := c.(type) {
	case *tls.Conn:
		return c.ConnectionState(), true
	case *wsConn:
		if c.tlsState != nil {
			return *c.tlsState, true
		}
	}
	return tls.ConnectionState{}, false
}
