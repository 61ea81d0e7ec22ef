package proxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsframe"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// TestFinWithLastDataSeenAtOnce: a client that sends a last frame and shuts its connection
// down straight away (no close frame) makes the gateway send 1001 "client gone" to the backend
// at once. The data and the FIN often arrive in one readiness event, and the relay does not
// read again after a short read; the parking lot's shutdown watch must tell it, or the FIN
// waits until the sweep asks the side to park (a second or more). Over TCP and Unix sockets, 20 times each, with
// the side relaying (hot) or just woken from the parking lot.
func TestFinWithLastDataSeenAtOnce(t *testing.T) {
	if !parkingSupported {
		t.Skip("no parking lot on this system")
	}
	defer goleak.VerifyNone(t)
	type ends struct {
		gw, peer interface {
			net.Conn
			CloseWrite() error
		}
	}
	transports := map[string]func() ends{
		"tcp": func() ends { a, b := tcpPair(t); return ends{a, b} },
		"unix": func() ends {
			a, b := socketPair(t)
			return ends{a, b}
		},
	}
	for name, mk := range transports {
		for i := range 20 {
			c, b := mk(), mk()
			opts := Options{CloseTimeout: time.Second, WriteTimeout: time.Second}
			p := NewPair(c.gw, GetReader(c.gw), b.gw, GetReader(b.gw), &opts)
			done := make(chan Result, 1)
			p.Start(func(r Result) { done <- r })
			bbr := bufio.NewReader(b.peer)
			if i%2 == 1 {
				// Make the client side hot: it relays, and waits in the runtime's poller.
				for range 3 {
					c.peer.Write(clientFrame(wsframe.OpBinary, []byte("warm")))
					if _, _, err := readFrame(b.peer, bbr); err != nil {
						t.Fatal(err)
					}
				}
			}
			start := time.Now()
			c.peer.Write(clientFrame(wsframe.OpBinary, []byte("last")))
			c.peer.CloseWrite()
			if h, p, err := readFrame(b.peer, bbr); err != nil || string(p) != "last" {
				t.Fatalf("%s %d: backend got %+v %q, %v; want the last frame", name, i, h, p, err)
			}
			h, payload, err := readFrame(b.peer, bbr)
			took := time.Since(start)
			if err != nil || h.Opcode != wsframe.OpClose {
				t.Fatalf("%s %d: backend got %+v, %v; want a close", name, i, h, err)
			}
			if code, _, _ := wsframe.ParseClosePayload(payload); code != wsframe.CloseGoingAway {
				t.Fatalf("%s %d: backend got close %d, want 1001", name, i, code)
			}
			if took > 500*time.Millisecond {
				t.Fatalf("%s %d: the client's FIN took %v to reach the backend as a close (the park deadline, not the event)", name, i, took)
			}
			b.peer.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, payload))
			c.peer.Close()
			b.peer.Close()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s %d: pair did not end", name, i)
			}
		}
	}
}

// readFrame reads one frame's header and unmasked payload from br within 5 s.
func readFrame(c net.Conn, br *bufio.Reader) (wsframe.Header, []byte, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var hb [wsframe.MaxHeaderSize]byte
	h, err := wsframe.ReadHeader(br, &hb)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(br, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		wsframe.Mask(h.Mask, 0, p)
	}
	return h, p, nil
}
