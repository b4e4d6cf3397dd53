package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// maxPacket bounds what the client reads: the bench only expects small
// acknowledgements and a provisioning answer, so a server that announces
// more is broken or hostile.
const maxPacket = 64 << 10

// mqttConn is one MQTT 3.1.1 session of a simulated device: no goroutine
// of its own, no queue, no retry; the device's exchange drives it step by
// step, which keeps a session at a few KiB.
type mqttConn struct {
	nc     net.Conn
	br     *bufio.Reader
	wb     bytes.Buffer
	nextID uint16
}

// dialMQTT opens a TCP connection to addr from src (nil: the system's
// choice).
func dialMQTT(addr string, src net.IP, timeout time.Duration) (*mqttConn, error) {
	d := net.Dialer{Timeout: timeout}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	// 512 bytes hold every packet the bench expects in one read; the
	// buffer grows per connection, so it is kept small for 10,000 of them.
	return &mqttConn{nc: nc, br: bufio.NewReaderSize(nc, 512)}, nil
}

// dialMQTTS opens a TCP connection to addr from src and does the TLS
// handshake with cfg, all within timeout. A failed handshake closes the
// connection.
func dialMQTTS(addr string, src net.IP, cfg *tls.Config, timeout time.Duration) (*mqttConn, error) {
	c, err := dialMQTT(addr, src, timeout)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c.nc, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.nc.Close()
		return nil, &handshakeError{err}
	}
	c.nc = tc
	c.br.Reset(tc)
	return c, nil
}

// handshakeError is a failed TLS handshake, which classify tells from a
// failed dial.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// close ends the session: with a DISCONNECT first when polite.
func (c *mqttConn) close(polite bool) {
	if polite {
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		c.nc.Write([]byte{packets.Disconnect << 4, 0})
	}
	c.nc.Close()
}

func (c *mqttConn) setDeadline(t time.Time) { c.nc.SetDeadline(t) }

// id returns the next packet identifier (never 0).
func (c *mqttConn) id() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

// send encodes pks into one write.
func (c *mqttConn) send(pks ...*packets.Packet) error {
	c.wb.Reset()
	for _, pk := range pks {
		pk.ProtocolVersion = 4
		var err error
		switch pk.FixedHeader.Type {
		case packets.Connect:
			err = pk.ConnectEncode(&c.wb)
		case packets.Subscribe:
			err = pk.SubscribeEncode(&c.wb)
		case packets.Publish:
			err = pk.PublishEncode(&c.wb)
		case packets.Puback:
			err = pk.PubackEncode(&c.wb)
		default:
			err = fmt.Errorf("packet type %d not supported", pk.FixedHeader.Type)
		}
		if err != nil {
			return &Error{Kind: KindProtocol, Err: fmt.Errorf("encode: %w", err)}
		}
	}
	_, err := c.nc.Write(c.wb.Bytes())
	return err
}

// read reads and decodes one packet.
func (c *mqttConn) read() (*packets.Packet, error) {
	hb, err := c.br.ReadByte()
	if err != nil {
		return nil, err
	}
	pk := &packets.Packet{ProtocolVersion: 4}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return nil, &Error{Kind: KindProtocol, Err: fmt.Errorf("fixed header %#x: %w", hb, err)}
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := c.br.ReadByte()
		if err != nil {
			return nil, err
		}
		n += int(b&0x7f) * mult
		mult <<= 7
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return nil, &Error{Kind: KindProtocol, Err: errors.New("malformed remaining length")}
		}
	}
	if n > maxPacket {
		return nil, &Error{Kind: KindProtocol, Err: fmt.Errorf("packet of %d bytes", n)}
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pingresp:
	case packets.Disconnect:
		return nil, &Error{Kind: KindClosed, Err: errors.New("server sent DISCONNECT")}
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return nil, &Error{Kind: KindProtocol, Err: err}
	}
	return pk, nil
}

// connect sends CONNECT (clean session) and waits for the CONNACK; a
// refusal is an *Error of KindRefused carrying the return code.
func (c *mqttConn) connect(clientID, username string, keepalive uint16) error {
	return c.connectWith(clientID, username, "", keepalive)
}

// connectWith is connect with a password (none when empty).
func (c *mqttConn) connectWith(clientID, username, password string, keepalive uint16) error {
	pk := &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        keepalive,
			ClientIdentifier: clientID,
			UsernameFlag:     username != "",
			Username:         []byte(username),
			PasswordFlag:     password != "",
			Password:         []byte(password),
		},
	}
	if err := c.send(pk); err != nil {
		return err
	}
	ack, err := c.read()
	if err != nil {
		return err
	}
	if ack.FixedHeader.Type != packets.Connack {
		return &Error{Kind: KindProtocol, Err: fmt.Errorf("packet type %d instead of CONNACK", ack.FixedHeader.Type)}
	}
	if ack.ReasonCode != 0 {
		return &Error{Kind: KindRefused, Err: fmt.Errorf("CONNACK return code %d (%s)", ack.ReasonCode, connackText(ack.ReasonCode))}
	}
	return nil
}

// connackText names MQTT 3.1.1 CONNACK return codes.
func connackText(code byte) string {
	switch code {
	case 1:
		return "unacceptable protocol version"
	case 2:
		return "identifier rejected"
	case 3:
		return "server unavailable"
	case 4:
		return "bad user name or password"
	case 5:
		return "not authorized"
	}
	return "unknown"
}

// subscribe subscribes to filter at qos and waits for the SUBACK.
func (c *mqttConn) subscribe(filter string, qos byte) error {
	id := c.id()
	pk := &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    id,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	}
	if err := c.send(pk); err != nil {
		return err
	}
	for {
		ack, err := c.read()
		if err != nil {
			return err
		}
		if ack.FixedHeader.Type != packets.Suback || ack.PacketID != id {
			continue // nothing else is expected; a stray packet is ignored
		}
		if len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] >= 0x80 {
			return &Error{Kind: KindRefused, Err: fmt.Errorf("subscription to %s refused (SUBACK % x)", filter, ack.ReasonCodes)}
		}
		return nil
	}
}

// publish builds a PUBLISH of payload on topic; at QoS 1 it gets a packet
// identifier, returned for matching its PUBACK.
func (c *mqttConn) publish(topic string, qos byte, payload []byte) (*packets.Packet, uint16) {
	pk := &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
	}
	var id uint16
	if qos > 0 {
		id = c.id()
		pk.PacketID = id
	}
	return pk, id
}

// ack acknowledges a QoS 1 PUBLISH the server sent.
func (c *mqttConn) ack(pk *packets.Packet) error {
	if pk.FixedHeader.Qos == 0 {
		return nil
	}
	return c.send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
}
