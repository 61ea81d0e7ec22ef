package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/wsframe"
)

// baseConfig is a gateway with one plain listener "pub" and a route /echo to backend,
// unlimited rates; extra is appended (more routes, or limits via routeLimits).
func baseConfig(backend, routeLimits, extra string) string {
	return fmt.Sprintf(`
listen "pub" { address = "127.0.0.1:0" }
limits {
  messages_per_second = 0
  bytes_per_second    = 0
  max_frame_size      = "4MiB"
  max_message_size    = "8MiB"
}
route "/echo" {
  backend = "ws://%s/ws"
  limits {
    %s
  }
}
%s
`, backend, routeLimits, extra)
}

func TestEchoSizes(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, baseConfig(b.addr(), "", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, g.url("pub", "/echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.SetReadLimit(4 << 20)
	for _, size := range []int{0, 1, 125, 126, 127, 65535, 65536, 64 << 10, 1 << 20, 3<<20 + 7} {
		for _, typ := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
			msg := bytes.Repeat([]byte("abcdefghij"), size/10+1)[:size]
			if err := c.Write(ctx, typ, msg); err != nil {
				t.Fatal(err)
			}
			gotTyp, got, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if gotTyp != typ || !bytes.Equal(got, msg) {
				t.Fatalf("size %d type %v: echo differs (got %d bytes type %v)", size, typ, len(got), gotTyp)
			}
			e := b.next(t, "message")
			if len(e.data) != size {
				t.Fatalf("backend saw %d bytes, want %d", len(e.data), size)
			}
		}
	}
	c.Close(websocket.StatusNormalClosure, "done")
	e := b.next(t, "close")
	if e.code != 1000 || e.reason != "done" {
		t.Fatalf("backend close %d %q, want 1000 done", e.code, e.reason)
	}
}

func TestFragmentedMessageAndInterleavedPing(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, baseConfig(b.addr(), "", ""))
	c := dialRaw(t, g.Addr("pub").String(), "/echo")
	if c.resp.StatusCode != 101 {
		t.Fatalf("status %d", c.resp.StatusCode)
	}
	c.send(false, wsframe.OpText, []byte("Hel"))
	c.send(true, wsframe.OpPing, []byte("between"))
	c.send(true, wsframe.OpContinuation, []byte("lo"))
	// The ping is answered locally, on the client side, with the same payload.
	f := c.read()
	if f.h.Opcode != wsframe.OpPong || string(f.payload) != "between" {
		t.Fatalf("want pong 'between', got %v %q", f.h.Opcode, f.payload)
	}
	e := b.next(t, "message")
	if string(e.data) != "Hello" || e.typ != gorilla.TextMessage {
		t.Fatalf("backend got %q", e.data)
	}
	var msg []byte
	for {
		f := c.read()
		msg = append(msg, f.payload...)
		if f.h.Fin {
			break
		}
	}
	if string(msg) != "Hello" {
		t.Fatalf("echo %q", msg)
	}
	b.none(t, "ping", 200*time.Millisecond) // the client's ping never reached the backend
}

func TestBackendPingAnsweredLocally(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, baseConfig(b.addr(), "", ""))
	c := dialRaw(t, g.Addr("pub").String(), "/echo")
	bc := <-b.conns
	pong := make(chan string, 1)
	bc.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := bc.WriteControl(gorilla.PingMessage, []byte("from-backend"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// The backend's read loop runs in the handler; the pong handler fires there.
	select {
	case s := <-pong:
		if s != "from-backend" {
			t.Fatalf("pong payload %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend got no pong")
	}
	// The client sees no ping: the next frame it reads is the echo of its own message.
	c.send(true, wsframe.OpText, []byte("x"))
	f := c.read()
	if f.h.Opcode != wsframe.OpText || string(f.payload) != "x" {
		t.Fatalf("client saw %v %q before its echo", f.h.Opcode, f.payload)
	}
}

func TestKeepalivePings(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, baseConfig(b.addr(), `ping_interval = "100ms"
    pong_timeout = "1s"`, ""))
	c := dialRaw(t, g.Addr("pub").String(), "/echo")
	f := c.read()
	if f.h.Opcode != wsframe.OpPing {
		t.Fatalf("want a keepalive ping, got %v", f.h.Opcode)
	}
	c.send(true, wsframe.OpPong, f.payload)
	b.next(t, "ping") // the backend is pinged by the gateway too (gorilla answers)
	// Keep answering: the connection stays up across several intervals.
	for i := 0; i < 3; i++ {
		f = c.read()
		if f.h.Opcode != wsframe.OpPing {
			t.Fatalf("want ping, got %v", f.h.Opcode)
		}
		c.send(true, wsframe.OpPong, f.payload)
	}
	c.send(true, wsframe.OpText, []byte("still here"))
	for {
		f = c.read()
		if f.h.Opcode == wsframe.OpText {
			break
		}
	}
	if string(f.payload) != "still here" {
		t.Fatalf("echo %q", f.payload)
	}
}

func TestCloseForwardedBothWays(t *testing.T) {
	t.Run("client starts", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		c.send(true, wsframe.OpClose, wsframe.AppendClosePayload(nil, 4001, "bye now"))
		e := b.next(t, "close")
		if e.code != 4001 || e.reason != "bye now" {
			t.Fatalf("backend got %d %q", e.code, e.reason)
		}
		code, reason := c.readClose()
		if code != 4001 || reason != "bye now" {
			t.Fatalf("client reply %d %q", code, reason)
		}
		c.expectEOF()
	})
	t.Run("backend starts", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		bc := <-b.conns
		bc.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(4002, "server bye"), time.Now().Add(time.Second))
		code, reason := c.readClose()
		if code != 4002 || reason != "server bye" {
			t.Fatalf("client got %d %q", code, reason)
		}
		c.send(true, wsframe.OpClose, wsframe.AppendClosePayload(nil, 4002, "ack"))
		e := b.next(t, "close")
		if e.code != 4002 || e.reason != "ack" {
			t.Fatalf("backend got reply %d %q", e.code, e.reason)
		}
		c.expectEOF()
	})
	t.Run("no status code", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		c.send(true, wsframe.OpClose, nil)
		e := b.next(t, "close")
		if e.code != gorilla.CloseNoStatusReceived {
			t.Fatalf("backend got %d, want a close without code (1005 locally)", e.code)
		}
		f := c.read()
		if f.h.Opcode != wsframe.OpClose {
			t.Fatalf("want close, got %v", f.h.Opcode)
		}
		// gorilla answers a code-less close with 1005 in its own API but must not put 1005
		// on the wire; whatever it sent, the gateway never writes 1005/1006/1015.
		if len(f.payload) >= 2 {
			code, _, err := wsframe.ParseClosePayload(f.payload)
			if err != nil || !code.ValidOnWire() {
				t.Fatalf("invalid close on the wire: %x", f.payload)
			}
		}
	})
	t.Run("close timeout", func(t *testing.T) {
		b := newBackend(t, func(b *testBackend) { b.noCloseReply = true })
		g := startGateway(t, baseConfig(b.addr(), `close_timeout = "300ms"`, ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		start := time.Now()
		c.send(true, wsframe.OpClose, wsframe.AppendClosePayload(nil, 1000, "x"))
		code, _ := c.readClose()
		if code != 1000 {
			t.Fatalf("gateway replied %d, want the client's own 1000", code)
		}
		if el := time.Since(start); el < 250*time.Millisecond {
			t.Fatalf("replied after %v, before close_timeout", el)
		}
		c.expectEOF()
	})
}

// TestCloseTable covers DESIGN.md's close translation table, row by row.
func TestCloseTable(t *testing.T) {
	t.Run("backend TCP ends without close", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		bc := <-b.conns
		bc.UnderlyingConn().Close()
		code, reason := c.readClose()
		if code != 1014 || reason != "backend closed" {
			t.Fatalf("client got %d %q, want 1014 backend closed", code, reason)
		}
	})
	t.Run("client TCP ends without close", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		<-b.conns
		c.conn.Close()
		e := b.next(t, "close")
		if e.code != 1001 || e.reason != "client gone" {
			t.Fatalf("backend got %d %q, want 1001 client gone", e.code, e.reason)
		}
	})
	t.Run("client violates the protocol", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		<-b.conns
		c.write([]byte{0x83, 0x80, 1, 2, 3, 4}) // reserved opcode 3
		expectCloses(t, c, b, 1002, 1001)
		if !strings.Contains(g.log.String(), "protocol error") {
			t.Fatalf("no log line for the protocol error:\n%s", g.log.String())
		}
	})
	t.Run("backend violates the protocol", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		bc := <-b.conns
		// A masked frame from a server is forbidden (RFC 6455 section 5.1).
		bc.UnderlyingConn().Write([]byte{0x81, 0x81, 1, 2, 3, 4, 'x' ^ 1})
		expectCloses(t, c, b, 1014, 1002)
	})
	t.Run("invalid UTF-8 from client", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", "")+`
route "/utf8" {
  backend = "ws://`+b.addr()+`/"
  validate_utf8 = true
}`)
		c := dialRaw(t, g.Addr("pub").String(), "/utf8")
		<-b.conns
		c.send(false, wsframe.OpText, []byte("ok \xce"))
		c.send(true, wsframe.OpContinuation, []byte("\xbaé but then \xff"))
		expectCloses(t, c, b, 1007, 1001)
	})
	t.Run("invalid UTF-8 from backend", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", "")+`
route "/utf8" {
  backend = "ws://`+b.addr()+`/"
  validate_utf8 = true
}`)
		c := dialRaw(t, g.Addr("pub").String(), "/utf8")
		bc := <-b.conns
		bc.UnderlyingConn().Write([]byte{0x81, 0x02, 0xc3, 0x28})
		expectCloses(t, c, b, 1014, 1007)
	})
	t.Run("frame over the limit", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), `max_frame_size = "1KiB"`, ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		<-b.conns
		c.send(true, wsframe.OpBinary, make([]byte, 1025))
		expectCloses(t, c, b, 1009, 1001)
	})
	t.Run("message over the limit from backend", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), `max_message_size = "2KiB"`, ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		bc := <-b.conns
		raw := wsframe.AppendFrame(nil, wsframe.Header{Opcode: wsframe.OpBinary}, make([]byte, 1500))
		raw = wsframe.AppendFrame(raw, wsframe.Header{Fin: true, Opcode: wsframe.OpContinuation}, make([]byte, 1500))
		bc.UnderlyingConn().Write(raw)
		expectCloses(t, c, b, 1014, 1009)
	})
	t.Run("rate limit close", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), `messages_per_second = 5
    burst = 5
    on_limit = "close"`, ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		<-b.conns
		go func() {
			for i := 0; i < 1000; i++ {
				h := wsframe.Header{Fin: true, Opcode: wsframe.OpText, Masked: true}
				if _, err := c.conn.Write(wsframe.AppendFrame(nil, h, []byte("m"))); err != nil {
					return
				}
			}
		}()
		expectCloses(t, c, b, 1008, 1001)
	})
	t.Run("client misses pong", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), `ping_interval = "100ms"
    pong_timeout = "200ms"`, ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		<-b.conns
		if f := c.read(); f.h.Opcode != wsframe.OpPing {
			t.Fatalf("want ping, got %v", f.h.Opcode)
		}
		// Never answer.
		e := b.next(t, "close")
		if e.code != 1001 || e.reason != "client gone" {
			t.Fatalf("backend got %d %q, want 1001 client gone", e.code, e.reason)
		}
		c.expectEOF()
	})
	t.Run("backend misses pong", func(t *testing.T) {
		b := newBackend(t, func(b *testBackend) { b.ignorePings = true })
		g := startGateway(t, baseConfig(b.addr(), `ping_interval = "100ms"
    pong_timeout = "200ms"`, ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		<-b.conns
		go func() {
			for {
				f, err := c.tryRead()
				if err != nil {
					return
				}
				if f.h.Opcode == wsframe.OpPing {
					h := wsframe.Header{Fin: true, Opcode: wsframe.OpPong, Masked: true}
					c.conn.Write(wsframe.AppendFrame(nil, h, f.payload))
				}
				if f.h.Opcode == wsframe.OpClose {
					code, reason, _ := wsframe.ParseClosePayload(f.payload)
					b.events <- backendEvent{kind: "client-close", code: int(code), reason: string(reason)}
					return
				}
			}
		}()
		e := b.next(t, "client-close")
		if e.code != 1014 || e.reason != "backend closed" {
			t.Fatalf("client got %d %q, want 1014 backend closed", e.code, e.reason)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), `idle_timeout = "400ms"`, ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		<-b.conns
		start := time.Now()
		code, reason := c.readClose()
		if code != 1001 || reason != "idle timeout" {
			t.Fatalf("client got %d %q", code, reason)
		}
		if el := time.Since(start); el < 350*time.Millisecond || el > 2*time.Second {
			t.Fatalf("idle close after %v, want about 400ms-500ms", el)
		}
		if e := b.next(t, "close"); e.code != 1001 || e.reason != "idle timeout" {
			t.Fatalf("backend got %d %q", e.code, e.reason)
		}
	})
	t.Run("gateway drain", func(t *testing.T) {
		b := newBackend(t)
		g := startGateway(t, baseConfig(b.addr(), "", ""))
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		<-b.conns
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- g.Drain(ctx)
		}()
		code, reason := c.readClose()
		if code != 1001 || reason != "going away" {
			t.Fatalf("client got %d %q", code, reason)
		}
		c.send(true, wsframe.OpClose, wsframe.AppendClosePayload(nil, 1001, ""))
		if e := b.next(t, "close"); e.code != 1001 || e.reason != "going away" {
			t.Fatalf("backend got %d %q", e.code, e.reason)
		}
		if err := <-done; err != nil {
			t.Fatalf("drain: %v", err)
		}
	})
}

// expectCloses asserts the client reads a close with clientCode and the backend receives a
// close with backendCode.
func expectCloses(t *testing.T, c *rawClient, b *testBackend, clientCode wsframe.CloseCode, backendCode int) {
	t.Helper()
	if code, reason := c.readClose(); code != clientCode {
		t.Fatalf("client got %d %q, want %d", code, reason, clientCode)
	}
	if e := b.next(t, "close"); e.code != backendCode {
		t.Fatalf("backend got %d %q, want %d", e.code, e.reason, backendCode)
	}
}
