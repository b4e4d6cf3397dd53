package mqtt

// Tests of zerotouch's patches (see ZEROTOUCH.md): ServeConnection and the
// on-demand WriteLoop.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

func writePacket(t *testing.T, c net.Conn, pk packets.Packet, encode func(*bytes.Buffer) error) {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, encode(&buf))
	_, err := c.Write(buf.Bytes())
	require.NoError(t, err)
}

// readPacket reads one packet of the given type from r.
func readPacket(t *testing.T, r *bufio.Reader, want byte) packets.Packet {
	t.Helper()
	b, err := r.ReadByte()
	require.NoError(t, err)
	var fh packets.FixedHeader
	require.NoError(t, fh.Decode(b))
	fh.Remaining, _, err = packets.DecodeLength(r)
	require.NoError(t, err)
	body := make([]byte, fh.Remaining)
	_, err = io.ReadFull(r, body)
	require.NoError(t, err)
	require.Equal(t, want, fh.Type)
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
	if want == packets.Publish {
		require.NoError(t, pk.PublishDecode(body))
	}
	return pk
}

// allowAll lets every client connect and publish or subscribe anywhere.
type allowAll struct{ HookBase }

func (allowAll) ID() string { return "allow-all" }
func (allowAll) Provides(b byte) bool {
	return b == OnConnectAuthenticate || b == OnACLCheck
}
func (allowAll) OnConnectAuthenticate(*Client, packets.Packet) bool { return true }
func (allowAll) OnACLCheck(*Client, string, bool) bool              { return true }

// TestServeConnectionLazyWriter: sessions served by ServeConnection hold
// one goroutine while idle; messages routed to them (here by the inline
// client, concurrently) all arrive, in order per publisher, through a
// WriteLoop that ends when its queue is empty.
func TestServeConnectionLazyWriter(t *testing.T) {
	s := New(&Options{InlineClient: true})
	require.NoError(t, s.AddHook(new(allowAll), nil))
	require.NoError(t, s.Serve())
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	ended := make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.ServeConnection("t", c, func(err error) { ended <- err })
		}
	}()

	const sessions, publishers, each = 4, 4, 200
	runtime.GC()
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, sessions)
	readers := make([]*bufio.Reader, sessions)
	for i := range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReader(c)
		connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: fmt.Sprint("c", i), Clean: true, Keepalive: 30}}
		writePacket(t, c, connect, connect.ConnectEncode)
		readPacket(t, readers[i], packets.Connack)
		sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "t/#"}}}
		writePacket(t, c, sub, sub.SubscribeEncode)
		readPacket(t, readers[i], packets.Suback)
	}
	perSession := func() float64 {
		var per float64
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if per = float64(runtime.NumGoroutine()-before) / sessions; per <= 1 {
				break
			}
		}
		return per
	}
	require.LessOrEqual(t, perSession(), 1.0, "goroutines per idle session")

	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				require.NoError(t, s.Publish(fmt.Sprintf("t/%d", p), []byte(fmt.Sprint(i)), false, 0))
			}
		})
	}
	for i, r := range readers {
		next := make([]int, publishers)
		for range publishers * each {
			pk := readPacket(t, r, packets.Publish)
			var p int
			fmt.Sscanf(pk.TopicName, "t/%d", &p)
			require.Equal(t, fmt.Sprint(next[p]), string(pk.Payload), "session %d, publisher %d", i, p)
			next[p]++
		}
	}
	wg.Wait()
	require.LessOrEqual(t, perSession(), 1.0, "goroutines per session once the queues are written")

	for _, c := range conns {
		c.Close()
	}
	for range sessions {
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("done was not called for every session")
		}
	}
}
