//go:build linux

package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestTLSSocketReadLikeTCP: TLSSocket's raw reads answer as the TCP connection's Read does
// in every case crypto/tls and the relay tell apart: data, a passed deadline (a timeout, after
// which reads go on), the peer's FIN (io.EOF), a reset, and a closed socket.
func TestTLSSocketReadLikeTCP(t *testing.T) {
	type outcome struct {
		data              string
		eof, timeout      bool
		reset, closed     bool
		opError, anyError bool
	}
	classify := func(b []byte, n int, err error) outcome {
		var oe *net.OpError
		var ne net.Error
		return outcome{
			data:     string(b[:n]),
			eof:      err == io.EOF,
			timeout:  errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded),
			reset:    errors.Is(err, syscall.ECONNRESET),
			closed:   errors.Is(err, net.ErrClosed),
			opError:  errors.As(err, &oe),
			anyError: err != nil,
		}
	}
	// run does the same steps over plain TCP connections and over TLSSocket.
	run := func(wrap bool) []outcome {
		var out []outcome
		open := func() (net.Conn, *net.TCPConn) {
			a, peer := tcpPair(t)
			if !wrap {
				return a, peer
			}
			c := TLSSocket(a)
			if _, ok := c.(*tlsSocket); !ok {
				t.Fatalf("TLSSocket gave %T", c)
			}
			return c, peer
		}
		read := func(c net.Conn) {
			b := make([]byte, 64)
			n, err := c.Read(b)
			out = append(out, classify(b, n, err))
		}
		c, peer := open()
		peer.Write([]byte("hello"))
		read(c)
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		read(c) // nothing comes: the deadline passes
		c.SetReadDeadline(time.Time{})
		go func() { time.Sleep(20 * time.Millisecond); peer.Write([]byte("after")) }()
		read(c) // waits in the poller, then reads
		peer.CloseWrite()
		read(c) // FIN
		c.Close()
		read(c)
		peer.Close()

		c, peer = open()
		peer.SetLinger(0)
		peer.Close() // reset
		time.Sleep(20 * time.Millisecond)
		read(c)
		c.Close()
		return out
	}
	tcp, raw := run(false), run(true)
	want := []outcome{
		{data: "hello"},
		{timeout: true, opError: true, anyError: true},
		{data: "after"},
		{eof: true, anyError: true},
		{closed: true, opError: true, anyError: true},
		{reset: true, opError: true, anyError: true},
	}
	for i := range want {
		if tcp[i] != want[i] || raw[i] != want[i] {
			t.Errorf("step %d: TCP %+v, TLSSocket %+v, want %+v", i, tcp[i], raw[i], want[i])
		}
	}
}
