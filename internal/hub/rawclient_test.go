package hub

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rawClient speaks MQTT packet by packet (encoded with mochi's codec), so
// tests can check exact reason codes and send what no library would.
type rawClient struct {
	t      *testing.T
	c      net.Conn
	r      *bufio.Reader
	v      byte
	nextID uint16
}

// rawConnect describes a CONNECT; nil Username/Password leave the flag off.
type rawConnect struct {
	ClientID string
	Username []byte
	Password []byte
	Clean    bool
	Will     *packets.Packet // topic and payload of a last will
	Props    packets.Properties
	// Keepalive is the keep-alive asked for, in seconds; nil asks 30.
	Keepalive *uint16
	// From is the local IP address to connect from (e.g. 127.0.0.2 for
	// another source); empty lets the system choose.
	From string
	// TLS, when set, connects over TLS with this configuration.
	TLS *tls.Config
}

func keepalive(s uint16) *uint16 { return &s }

// dialRaw connects and sends a CONNECT in protocol version v (3, 4 or 5),
// returning the client and the CONNACK.
func dialRaw(t *testing.T, addr string, v byte, rc rawConnect) (*rawClient, packets.Packet) {
	t.Helper()
	d := net.Dialer{Timeout: waitLimit}
	if rc.From != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(rc.From)}
	}
	var c net.Conn
	var err error
	if rc.TLS != nil {
		c, err = tls.DialWithDialer(&d, "tcp", addr, rc.TLS)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &rawClient{t: t, c: c, r: bufio.NewReader(c), v: v}
	name := []byte("MQTT")
	if v == 3 {
		name = []byte("MQIsdp")
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: v,
		Properties:      rc.Props,
		Connect: packets.ConnectParams{
			ProtocolName:     name,
			ClientIdentifier: rc.ClientID,
			Clean:            rc.Clean,
			Keepalive:        30,
			Username:         rc.Username,
			UsernameFlag:     rc.Username != nil,
			Password:         rc.Password,
			PasswordFlag:     rc.Password != nil,
		},
	}
	if rc.Keepalive != nil {
		pk.Connect.Keepalive = *rc.Keepalive
	}
	if rc.Will != nil {
		pk.Connect.WillFlag = true
		pk.Connect.WillTopic = rc.Will.TopicName
		pk.Connect.WillPayload = rc.Will.Payload
	}
	cl.send(pk)
	ack, err := cl.read()
	if err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	if ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("got packet type %d, want CONNACK", ack.FixedHeader.Type)
	}
	return cl, ack
}

func (cl *rawClient) send(pk packets.Packet) {
	cl.t.Helper()
	pk.ProtocolVersion = cl.v
	pk.Mods.AllowResponseInfo = true // else mochi's encoder drops correlation data
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		cl.t.Fatalf("rawClient cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		cl.t.Fatalf("encode: %v", err)
	}
	cl.c.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := cl.c.Write(buf.Bytes()); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet; io.EOF (or a reset) when the server
// closed the connection.
func (cl *rawClient) read() (packets.Packet, error) {
	cl.c.SetReadDeadline(time.Now().Add(waitLimit))
	var pk packets.Packet
	b, err := cl.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining, _, err = packets.DecodeLength(cl.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, pk.FixedHeader.Remaining)
	if _, err := io.ReadFull(cl.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = cl.v
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

func (cl *rawClient) id() uint16 {
	cl.nextID++
	return cl.nextID
}

// subscribe sends one SUBSCRIBE and returns the SUBACK's reason code.
func (cl *rawClient) subscribe(filter string, qos byte) byte {
	cl.t.Helper()
	cl.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    cl.id(),
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	})
	pk := cl.expect(packets.Suback)
	if len(pk.ReasonCodes) != 1 {
		cl.t.Fatalf("SUBACK has %d reason codes, want 1", len(pk.ReasonCodes))
	}
	return pk.ReasonCodes[0]
}

// publish sends a PUBLISH; at QoS 1 it returns the PUBACK (ok false when
// the server closed the connection instead).
func (cl *rawClient) publish(topic string, qos byte, payload []byte, props packets.Properties) (ack packets.Packet, ok bool) {
	cl.t.Helper()
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
		Properties:  props,
	}
	if qos > 0 {
		pk.PacketID = cl.id()
	}
	cl.send(pk)
	if qos == 0 {
		return packets.Packet{}, true
	}
	for {
		got, err := cl.read()
		if err != nil {
			return packets.Packet{}, false
		}
		switch got.FixedHeader.Type {
		case packets.Puback:
			return got, true
		case packets.Disconnect:
			return got, false
		}
	}
}

// expect reads until a packet of type typ, failing on anything but
// PUBLISH packets, which are answered (QoS 1) and skipped.
func (cl *rawClient) expect(typ byte) packets.Packet {
	cl.t.Helper()
	for {
		pk, err := cl.read()
		if err != nil {
			cl.t.Fatalf("waiting for packet type %d: %v", typ, err)
		}
		if pk.FixedHeader.Type == typ {
			return pk
		}
		if pk.FixedHeader.Type != packets.Publish {
			cl.t.Fatalf("got packet type %d while waiting for %d", pk.FixedHeader.Type, typ)
		}
	}
}

// sync sends PINGREQ and returns every PUBLISH received before PINGRESP:
// the server writes packets in order, so anything it sent before handling
// the PINGREQ is returned.
func (cl *rawClient) sync() []packets.Packet {
	cl.t.Helper()
	cl.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	var pubs []packets.Packet
	for {
		pk, err := cl.read()
		if err != nil {
			cl.t.Fatalf("waiting for PINGRESP: %v", err)
		}
		switch pk.FixedHeader.Type {
		case packets.Pingresp:
			return pubs
		case packets.Publish:
			pubs = append(pubs, pk)
			if pk.FixedHeader.Qos == 1 {
				cl.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
			}
		default:
			cl.t.Fatalf("got packet type %d while waiting for PINGRESP", pk.FixedHeader.Type)
		}
	}
}

// waitClosed reads until the server closes the connection, returning the
// DISCONNECT it sent first, if any.
func (cl *rawClient) waitClosed() (disconnect *packets.Packet) {
	cl.t.Helper()
	for {
		pk, err := cl.read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				cl.t.Fatalf("connection still open after %v", waitLimit)
			}
			return disconnect
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			p := pk
			disconnect = &p
		}
	}
}
