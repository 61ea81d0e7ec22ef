package gateway_test

// Robustness suite (issue 8): backend faults, client faults and panic containment. Every case
// checks what the peer on the other side sees (HTTP status or close code, per DESIGN.md's
// tables) and the gateway's JSON log line for it. The hostile-load churn test is in
// churn_test.go; the frame parser fuzz target is proxy.FuzzRelay.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/gateway"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsframe"
)

// robustConfig is one plain listener "pub" with per-IP limits off (the suite opens many
// connections from 127.0.0.1 in quick succession), extra limits, and routes.
func robustConfig(limits, routes string) string {
	return `
listen "pub" { address = "127.0.0.1:0" }
limits {
  messages_per_second = 0
  bytes_per_second    = 0
  max_frame_size      = "4MiB"
  max_message_size    = "8MiB"
  max_connections_per_ip = 0
  handshakes_per_ip_per_second = 0
  close_timeout = "1s"
  ` + limits + `
}
` + routes
}

// logRecord is one parsed JSON log line.
type logRecord map[string]any

// get returns field k formatted as a string ("" if absent); JSON numbers print as integers.
func (r logRecord) get(k string) string {
	v, ok := r[k]
	if !ok {
		return ""
	}
	if f, ok := v.(float64); ok && f == float64(int64(f)) {
		return fmt.Sprint(int64(f))
	}
	return fmt.Sprint(v)
}

// records parses the gateway's log.
func (g *testGateway) records() []logRecord {
	var out []logRecord
	for line := range strings.SplitSeq(g.log.String(), "\n") {
		if line == "" {
			continue
		}
		var r logRecord
		if json.Unmarshal([]byte(line), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// waitLog waits for a log record whose fields equal want ("k", "v", ...) and returns it.
func (g *testGateway) waitLog(t *testing.T, kv ...string) logRecord {
	t.Helper()
	var found logRecord
	deadline := time.Now().Add(5 * time.Second)
	for found == nil {
		for _, r := range g.records() {
			ok := true
			for i := 0; i+1 < len(kv); i += 2 {
				if r.get(kv[i]) != kv[i+1] {
					ok = false
					break
				}
			}
			if ok {
				found = r
				break
			}
		}
		if found == nil {
			if time.Now().After(deadline) {
				t.Fatalf("no log line with %q in:\n%s", kv, g.log.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return found
}

// wsBackend is a raw WebSocket backend: it answers the gateway's handshake with a correct 101,
// then runs the test's behaviour on the connection. It reports the close frame the gateway
// sends (code, or -1 when the TCP connection ends without one) on closes.
type wsBackend struct {
	addr   string
	closes chan wsClose
}

type wsClose struct {
	code   int
	reason string
}

// newWSBackend serves every connection: handshake, then act(conn) (which may write raw bytes
// and return at once), then it reads the gateway's frames until a close, which it answers
// with the same code unless act returned false.
func newWSBackend(t *testing.T, act func(c net.Conn) (reply bool)) *wsBackend {
	b := &wsBackend{closes: make(chan wsClose, 16)}
	b.addr = rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			wsframe.AcceptKey(req.Header.Get("Sec-WebSocket-Key")))
		reply := act(c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			f, err := readFrame(br, wsframe.RoleServer)
			if err != nil {
				b.closes <- wsClose{code: -1, reason: err.Error()}
				return
			}
			if f.h.Opcode == wsframe.OpClose {
				code, reason, err := wsframe.ParseClosePayload(f.payload)
				if err != nil {
					b.closes <- wsClose{code: -2, reason: err.Error()}
					return
				}
				b.closes <- wsClose{code: int(code), reason: string(reason)}
				if reply {
					c.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, f.payload))
				}
				return
			}
		}
	})
	return b
}

// nextClose returns the close the backend saw.
func (b *wsBackend) nextClose(t *testing.T) wsClose {
	t.Helper()
	select {
	case c := <-b.closes:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("backend saw no close")
		return wsClose{}
	}
}

// readFrame reads one frame checked for role (RoleServer: masked, as the gateway writes to a
// backend) and returns it unmasked.
func readFrame(br *bufio.Reader, role wsframe.Role) (frame, error) {
	var hb [wsframe.MaxHeaderSize]byte
	h, err := wsframe.ReadHeader(br, &hb)
	if err != nil {
		return frame{}, err
	}
	if err := h.Check(role, 0); err != nil {
		return frame{}, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(br, p); err != nil {
		return frame{}, err
	}
	if h.Masked {
		wsframe.Mask(h.Mask, 0, p)
	}
	return frame{h: h, payload: p}, nil
}

// serverFrame is a frame as a server writes it (unmasked).
func serverFrame(fin bool, op wsframe.Opcode, payload []byte) []byte {
	return wsframe.AppendFrame(nil, wsframe.Header{Fin: fin, Opcode: op}, payload)
}

// closeBody is a raw close payload with any code (including ones wsframe would not write).
func closeBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// TestBackendHandshakeFaults: a backend that fails before its 101 gets the client the status
// of DESIGN.md's handshake table, and each refusal is logged with its status and reason.
func TestBackendHandshakeFaults(t *testing.T) {
	closesAtOnce := rawBackend(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST
		}
	})
	routes := map[string]string{
		"/refused":   listenRefused(t),
		"/silent":    silentBackend(t),
		"/s200":      httpBackend(t, 200, ""),
		"/s404":      httpBackend(t, 404, ""),
		"/s500":      httpBackend(t, 500, ""),
		"/badaccept": httpBackend(t, 101, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n"),
		"/noupgrade": httpBackend(t, 101, "Connection: Upgrade\r\n"),
		"/reset":     closesAtOnce,
	}
	var rs strings.Builder
	for p, a := range routes {
		fmt.Fprintf(&rs, "route %q { backend = \"ws://%s/\" }\n", p, a)
	}
	g := startGateway(t, robustConfig(`handshake_timeout = "3s"
  backend_handshake_timeout = "300ms"`, rs.String()))
	addr := g.Addr("pub").String()
	for _, tc := range []struct {
		path   string
		status int
		reason string // part of the logged reason
	}{
		{"/refused", 502, "refused"},
		{"/silent", 504, "timed out"},
		{"/s200", 502, "answered 200"},
		{"/s404", 502, "answered 404"},
		{"/s500", 502, "answered 500"},
		{"/badaccept", 502, "Sec-WebSocket-Accept"},
		{"/noupgrade", 502, "Upgrade"},
		{"/reset", 502, "handshake failed"},
	} {
		t.Run(tc.path[1:], func(t *testing.T) {
			c := dialRaw(t, addr, tc.path)
			if c.resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", c.resp.StatusCode, tc.status, c.body())
			}
			r := g.waitLog(t, "msg", "handshake refused", "route", tc.path)
			if r.get("status") != fmt.Sprint(tc.status) || !strings.Contains(r.get("reason"), tc.reason) {
				t.Fatalf("log line %v, want status %d and a reason with %q", r, tc.status, tc.reason)
			}
		})
	}
}

// TestBackendRelayFaults: after the upgrade, a backend that dies mid-message or breaks the
// protocol makes the client get 1014 and the backend (when it still can) 1002 or 1007, and the
// connection's log line says so.
func TestBackendRelayFaults(t *testing.T) {
	big := make([]byte, 100<<10)
	cases := []struct {
		name        string
		wire        []byte // what the backend writes after the 101
		die         bool   // then the backend drops the TCP connection
		client      wsframe.CloseCode
		backend     int    // close code the backend gets (-1: none, it is gone)
		cause       string // part of the log line's cause
		utf8, frag1 bool   // validated route; the client sees a first fragment before the close
	}{
		{name: "dies mid-header", wire: []byte{0x82, 0x7F, 0, 0}, die: true, client: 1014, backend: -1, cause: "backend connection lost"},
		{name: "dies mid-payload", wire: serverFrame(true, wsframe.OpBinary, big)[:200], die: true, client: 1014, backend: -1, cause: "backend connection lost"},
		{name: "dies mid-frame after a chunk", wire: serverFrame(true, wsframe.OpBinary, big)[:proxy.ChunkSize+8<<10], die: true, client: 1014, backend: -1, cause: "backend connection lost", frag1: true},
		{name: "dies mid-message", wire: serverFrame(false, wsframe.OpText, []byte("part one")), die: true, client: 1014, backend: -1, cause: "backend connection lost", frag1: true},
		{name: "masked frame", wire: []byte{0x81, 0x81, 1, 2, 3, 4, 'x' ^ 1}, client: 1014, backend: 1002, cause: "masked"},
		{name: "reserved opcode 3", wire: serverFrame(true, 3, nil), client: 1014, backend: 1002, cause: "reserved opcode"},
		{name: "reserved opcode 11", wire: serverFrame(true, 11, nil), client: 1014, backend: 1002, cause: "reserved opcode"},
		{name: "RSV1", wire: wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Rsv: wsframe.Rsv1, Opcode: wsframe.OpText}, []byte("x")), client: 1014, backend: 1002, cause: "reserved bits"},
		{name: "control over 125", wire: serverFrame(true, wsframe.OpPing, make([]byte, 126)), client: 1014, backend: 1002, cause: "over 125"},
		{name: "close 1005 on the wire", wire: serverFrame(true, wsframe.OpClose, closeBody(1005, "")), client: 1014, backend: 1002, cause: "invalid close code"},
		{name: "close 999", wire: serverFrame(true, wsframe.OpClose, closeBody(999, "x")), client: 1014, backend: 1002, cause: "invalid close code"},
		{name: "close invalid UTF-8 reason", wire: serverFrame(true, wsframe.OpClose, closeBody(1000, "\xff")), client: 1014, backend: 1007, cause: "invalid UTF-8"},
		{name: "invalid UTF-8 text", wire: serverFrame(true, wsframe.OpText, []byte("ok\xc3\x28")), client: 1014, backend: 1007, cause: "invalid UTF-8", utf8: true},
		{name: "invalid UTF-8 across fragments", wire: append(serverFrame(false, wsframe.OpText, []byte("ok \xe2\x82")), serverFrame(true, wsframe.OpContinuation, []byte("x"))...), client: 1014, backend: 1007, cause: "invalid UTF-8", utf8: true, frag1: true},
		{name: "continuation without start", wire: serverFrame(true, wsframe.OpContinuation, []byte("x")), client: 1014, backend: 1002, cause: "continuation"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newWSBackend(t, func(c net.Conn) bool {
				time.Sleep(50 * time.Millisecond) // the client has read its 101
				c.Write(tc.wire)
				if tc.die {
					c.Close()
				}
				return true
			})
			g := startGateway(t, robustConfig("", fmt.Sprintf("route \"/r\" {\n backend = \"ws://%s/\"\n validate_utf8 = %v\n}\n", b.addr, tc.utf8)))
			c := dialRaw(t, g.Addr("pub").String(), "/r")
			if c.resp.StatusCode != 101 {
				t.Fatalf("status %d", c.resp.StatusCode)
			}
			sawData := false
			for {
				f := c.read()
				if f.h.Opcode != wsframe.OpClose {
					sawData = true
					if f.h.Fin {
						t.Fatalf("client got a whole frame (%v, %d bytes) of a message that never ended", f.h.Opcode, len(f.payload))
					}
					continue
				}
				code, reason, err := wsframe.ParseClosePayload(f.payload)
				if err != nil || code != tc.client {
					t.Fatalf("client got close %d %q (%v), want %d", code, reason, err, tc.client)
				}
				break
			}
			if sawData != tc.frag1 {
				t.Fatalf("client saw a data fragment: %v, want %v", sawData, tc.frag1)
			}
			// The client answers the close (else the gateway waits close_timeout for it).
			c.send(true, wsframe.OpClose, wsframe.AppendClosePayload(nil, tc.client, ""))
			if tc.backend == -1 {
				// The TCP connection is gone: the backend gets nothing.
			} else if got := b.nextClose(t); got.code != tc.backend {
				t.Fatalf("backend got close %d %q, want %d", got.code, got.reason, tc.backend)
			}
			c.expectEOF()
			c.conn.Close() // as a client does after the close handshake: the gateway stops lingering
			r := g.waitLog(t, "msg", "connection", "route", "/r")
			if r.get("client_close_sent") != fmt.Sprint(int(tc.client)) || !strings.Contains(r.get("cause"), tc.cause) {
				t.Fatalf("log line %v: want client_close_sent %d, cause with %q", r, tc.client, tc.cause)
			}
			if tc.backend > 0 && r.get("backend_close_sent") != fmt.Sprint(tc.backend) {
				t.Fatalf("log line %v: want backend_close_sent %d", r, tc.backend)
			}
		})
	}
}

// TestBackendStalls: a backend that stops reading while the client keeps sending fills the
// socket buffers; the gateway then stops reading the client (backpressure: memory stays
// bounded), and after write_timeout it cuts the backend and tells the client 1014.
func TestBackendStalls(t *testing.T) {
	stall := make(chan struct{})
	b := newWSBackend(t, func(c net.Conn) bool {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(4096)
		}
		<-stall // never reads until the test ends
		return false
	})
	defer close(stall)
	g := startGateway(t, robustConfig(`write_timeout = "1s"`, fmt.Sprintf("route \"/r\" { backend = \"ws://%s/\" }\n", b.addr)))
	c := dialRaw(t, g.Addr("pub").String(), "/r")
	if c.resp.StatusCode != 101 {
		t.Fatalf("status %d", c.resp.StatusCode)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	peak := base
	stopFlood := make(chan struct{})
	flooded := make(chan int)
	go func() {
		sent := 0
		msg := make([]byte, 64<<10)
		defer func() { flooded <- sent }()
		for {
			select {
			case <-stopFlood:
				return
			default:
			}
			h := wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Masked: true}
			c.conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.conn.Write(wsframe.AppendFrame(nil, h, msg)); err != nil && !isTimeout(err) {
				return
			} else if err == nil {
				sent += len(msg)
			}
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}()
	start := time.Now()
	code, reason := c.readClose()
	el := time.Since(start)
	close(stopFlood)
	sent := <-flooded
	if code != 1014 || reason != "backend closed" {
		t.Fatalf("client got %d %q, want 1014 backend closed", code, reason)
	}
	if el < 900*time.Millisecond || el > 6*time.Second {
		t.Fatalf("cut after %v, want write_timeout (1s) after the buffers filled", el)
	}
	growth := int64(peak) - int64(base)
	t.Logf("client pushed %d KiB before the cut after %v; peak heap growth %d KiB", sent>>10, el, growth>>10)
	if growth > 8<<20 {
		t.Fatalf("heap grew %d KiB while the backend did not read", growth>>10)
	}
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.send(true, wsframe.OpClose, wsframe.AppendClosePayload(nil, 1014, ""))
	c.expectEOF()
	c.conn.Close() // as a client does after the close handshake: the gateway stops lingering
	r := g.waitLog(t, "msg", "connection", "route", "/r")
	if r.get("client_close_sent") != "1014" || r.get("cause") != "backend connection lost" {
		t.Fatalf("log line %v", r)
	}
	g.waitLog(t, "msg", "connection lost", "side", "backend")
}

// TestClientStallsThenCloses: a client that stops reading while a (gorilla) backend streams
// to it, and then sends a close: the backend gets the client's code at once, not when the
// gateway's blocked write to the client times out, and the connection ends close_timeout
// later, logged with the client's code.
func TestClientStallsThenCloses(t *testing.T) {
	b := newBackend(t, func(b *testBackend) { b.manual = true })
	g := startGateway(t, robustConfig(`write_timeout = "8s"`, fmt.Sprintf("route \"/r\" { backend = \"ws://%s/\" }\n", b.addr())))
	c := dialRaw(t, g.Addr("pub").String(), "/r")
	if c.resp.StatusCode != 101 {
		t.Fatalf("status %d", c.resp.StatusCode)
	}
	var bc *websocket.Conn
	select {
	case bc = <-b.conns:
	case <-time.After(5 * time.Second):
		t.Fatal("no backend connection")
	}
	var sent atomic.Int64
	flooded := make(chan struct{})
	go func() { // the backend streams until its writes fail
		defer close(flooded)
		msg := make([]byte, 64<<10)
		for {
			bc.SetWriteDeadline(time.Now().Add(15 * time.Second))
			if err := bc.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	go func() { // and reads, so that its close handler sees the client's close
		for {
			if _, _, err := bc.ReadMessage(); err != nil {
				return
			}
		}
	}()
	// The client reads nothing: wait until the backend's writes stop moving.
	for last := int64(-1); sent.Load() != last; time.Sleep(300 * time.Millisecond) {
		last = sent.Load()
	}
	start := time.Now()
	c.send(true, wsframe.OpClose, closeBody(4001, "bye"))
	if e := b.next(t, "close"); e.code != 4001 || e.reason != "bye" {
		t.Fatalf("backend got close %d %q, want 4001 bye", e.code, e.reason)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("the client's close reached the backend after %v, behind the blocked write (write_timeout 8s)", el)
	}
	r := g.waitLog(t, "msg", "connection", "route", "/r")
	if el := time.Since(start); el > 6*time.Second {
		t.Fatalf("the connection ended %v after the client's close; want close_timeout (1s) and the linger, not write_timeout (8s)", el)
	}
	if r.get("client_close_received") != "4001" || r.get("backend_close_sent") != "4001" || r.get("closed_by") != "client" {
		t.Fatalf("log line %v: want the client's 4001 received and forwarded, closed by the client", r)
	}
	c.conn.Close()
	bc.Close()
	<-flooded
}

// masked is a client frame (masked with a random key) built from raw header fields.
func masked(h wsframe.Header, payload []byte) []byte {
	h.Masked = true
	rand.Read(h.Mask[:])
	return wsframe.AppendFrame(nil, h, payload)
}

// rawMasked is a frame whose header bytes are given as is, then a mask key and payload.
func rawMasked(head []byte, payload []byte) []byte {
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	out := append(append([]byte{}, head...), key[:]...)
	p := append([]byte{}, payload...)
	wsframe.Mask(key, 0, p)
	return append(out, p...)
}

// clientViolations is every protocol violation wsframe detects in a client's stream, as wire
// bytes. where says in which context it is one: "mid" (between messages), "frag" (inside a
// fragmented message), or "" (both).
func clientViolations() []struct {
	name, where string
	wire        []byte
	code        wsframe.CloseCode
} {
	type v = struct {
		name, where string
		wire        []byte
		code        wsframe.CloseCode
	}
	out := []v{
		{"RSV1", "", masked(wsframe.Header{Fin: true, Rsv: wsframe.Rsv1, Opcode: wsframe.OpText}, []byte("x")), 1002},
		{"RSV2", "", masked(wsframe.Header{Fin: true, Rsv: wsframe.Rsv2, Opcode: wsframe.OpBinary}, []byte("x")), 1002},
		{"RSV3 on ping", "", masked(wsframe.Header{Fin: true, Rsv: wsframe.Rsv3, Opcode: wsframe.OpPing}, nil), 1002},
		{"RSV on continuation", "frag", masked(wsframe.Header{Fin: true, Rsv: wsframe.Rsv1, Opcode: wsframe.OpContinuation}, []byte("x")), 1002},
	}
	for _, op := range []wsframe.Opcode{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		out = append(out, v{fmt.Sprintf("reserved opcode %d", op), "", masked(wsframe.Header{Fin: true, Opcode: op}, []byte("x")), 1002})
	}
	out = append(out,
		v{"ping over 125", "", masked(wsframe.Header{Fin: true, Opcode: wsframe.OpPing}, make([]byte, 126)), 1002},
		v{"close over 125", "", masked(wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, closeBody(1000, strings.Repeat("r", 124))), 1002},
		v{"fragmented ping", "", masked(wsframe.Header{Opcode: wsframe.OpPing}, []byte("x")), 1002},
		v{"fragmented close", "", masked(wsframe.Header{Opcode: wsframe.OpClose}, closeBody(1000, "")), 1002},
		v{"64-bit length with MSB", "", rawMasked([]byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0}, nil), 1002},
		v{"non-minimal 16-bit length", "", rawMasked([]byte{0x82, 0xFE, 0, 5}, []byte("hello")), 1002},
		v{"non-minimal 64-bit length", "", rawMasked([]byte{0x82, 0xFF, 0, 0, 0, 0, 0, 0, 1, 0}, make([]byte, 256)), 1002},
		v{"non-minimal continuation length", "frag", rawMasked([]byte{0x80, 0xFE, 0, 1}, []byte("x")), 1002},
		v{"unmasked frame", "", wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("x")), 1002},
		v{"unmasked continuation", "frag", wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpContinuation}, []byte("x")), 1002},
		v{"continuation without start", "mid", masked(wsframe.Header{Fin: true, Opcode: wsframe.OpContinuation}, []byte("x")), 1002},
		v{"new text frame inside a message", "frag", masked(wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("x")), 1002},
		v{"new binary frame inside a message", "frag", masked(wsframe.Header{Opcode: wsframe.OpBinary}, []byte("x")), 1002},
		v{"close payload of 1 byte", "", masked(wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, []byte{3}), 1002},
		v{"invalid UTF-8 close reason", "", masked(wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, closeBody(1000, "bye \xc0\xaf")), 1007},
	)
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535} {
		out = append(out, v{fmt.Sprintf("close code %d", code), "", masked(wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, closeBody(code, "")), 1002})
	}
	return out
}

// TestClientProtocolViolations sends every violation the codec detects, mid-stream and inside
// a fragmented message: the client gets 1002 (1007 for a bad close reason) and its TCP
// connection is ended, the backend gets 1001, nothing of the bad frame reaches the backend,
// and a log line names the protocol error.
func TestClientProtocolViolations(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, robustConfig("", fmt.Sprintf("route \"/r\" { backend = \"ws://%s/\" }\n", b.addr())))
	addr := g.Addr("pub").String()
	for _, v := range clientViolations() {
		for _, where := range []string{"mid", "frag"} {
			if v.where != "" && v.where != where {
				continue
			}
			t.Run(where+"/"+v.name, func(t *testing.T) {
				c := dialRaw(t, addr, "/r")
				if c.resp.StatusCode != 101 {
					t.Fatalf("status %d", c.resp.StatusCode)
				}
				// A full message first: the connection is established end to end.
				c.send(true, wsframe.OpText, []byte("before"))
				if f := c.read(); string(f.payload) != "before" {
					t.Fatalf("echo %q", f.payload)
				}
				if e := b.next(t, "message"); string(e.data) != "before" {
					t.Fatalf("backend got %q", e.data)
				}
				if where == "frag" {
					c.send(false, wsframe.OpBinary, []byte("frag-start"))
				}
				c.write(v.wire)
				f := c.read()
				if f.h.Opcode != wsframe.OpClose {
					t.Fatalf("client got %v %q before the close", f.h.Opcode, f.payload)
				}
				code, _, err := wsframe.ParseClosePayload(f.payload)
				if err != nil || code != v.code {
					t.Fatalf("client got close %x (%v), want %d", f.payload, err, v.code)
				}
				c.expectEOF()
				c.conn.Close() // as a client does after the close handshake: the gateway stops lingering
				e := b.next(t, "close")
				if e.code != 1001 || e.reason != "client error" {
					t.Fatalf("backend got %d %q, want 1001 client error", e.code, e.reason)
				}
				local := c.conn.LocalAddr().String()
				g.waitLog(t, "msg", "protocol error", "side", "client", "remote", local)
				r := g.waitLog(t, "msg", "connection", "client", local)
				if r.get("client_close_sent") != fmt.Sprint(int(v.code)) || r.get("backend_close_sent") != "1001" || r.get("closed_by") != "gateway" {
					t.Fatalf("log line %v", r)
				}
			})
		}
	}
	b.none(t, "message", 100*time.Millisecond) // no bad frame or fragment reached the backend
}

// TestClientHalfFrameThenReset: a client that writes part of a frame and resets its TCP
// connection makes the backend get 1001 "client gone"; the partial frame is never forwarded.
func TestClientHalfFrameThenReset(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, robustConfig("", fmt.Sprintf("route \"/r\" { backend = \"ws://%s/\" }\n", b.addr())))
	addr := g.Addr("pub").String()
	full := masked(wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, make([]byte, 70<<10))
	for _, tc := range []struct {
		name string
		wire []byte
	}{
		{"1 header byte", full[:1]},
		{"half a 64-bit length", full[:6]},
		{"header without mask key", full[:10]},
		{"header and some payload", full[:100]},
		{"one chunk and more", full[:40<<10]},
		{"a fragment then half the next", append(masked(wsframe.Header{Opcode: wsframe.OpText}, []byte("one")), masked(wsframe.Header{Fin: true, Opcode: wsframe.OpContinuation}, []byte("two"))[:5]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr, "/r")
			if c.resp.StatusCode != 101 {
				t.Fatalf("status %d", c.resp.StatusCode)
			}
			c.write(tc.wire)
			time.Sleep(50 * time.Millisecond)
			c.conn.(*net.TCPConn).SetLinger(0)
			c.conn.Close()
			e := b.next(t, "close")
			if e.code != 1001 || e.reason != "client gone" {
				t.Fatalf("backend got %d %q, want 1001 client gone", e.code, e.reason)
			}
			r := g.waitLog(t, "msg", "connection", "client", c.conn.LocalAddr().String())
			if r.get("backend_close_sent") != "1001" || r.get("cause") != "client connection lost" {
				t.Fatalf("log line %v", r)
			}
		})
	}
	b.none(t, "message", 100*time.Millisecond)
}

// TestClientDataAfterClose: data a client sends after its close frame is discarded: the
// backend sees the close and never the data, and the close handshake completes.
func TestClientDataAfterClose(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, robustConfig("", fmt.Sprintf("route \"/r\" { backend = \"ws://%s/\" }\n", b.addr())))
	c := dialRaw(t, g.Addr("pub").String(), "/r")
	var burst []byte
	burst = append(burst, masked(wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, closeBody(1000, "bye"))...)
	for i := range 20 {
		burst = append(burst, masked(wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte(fmt.Sprintf("after close %d", i)))...)
	}
	burst = append(burst, masked(wsframe.Header{Fin: true, Opcode: wsframe.OpPing}, []byte("late ping"))...)
	c.write(burst) // one write: the data is already in the gateway's buffer with the close
	if e := b.next(t, "close"); e.code != 1000 || e.reason != "bye" {
		t.Fatalf("backend got %d %q", e.code, e.reason)
	}
	for {
		f := c.read()
		if f.h.Opcode == wsframe.OpClose {
			break
		}
		t.Fatalf("client got %v %q after its close", f.h.Opcode, f.payload)
	}
	// Keep sending after the reply: the gateway ends the connection, nothing gets through.
	c.conn.Write(masked(wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("even later")))
	c.expectEOF()
	c.conn.Close() // as a client does after the close handshake: the gateway stops lingering
	b.none(t, "message", 300*time.Millisecond)
	b.none(t, "ping", 0)
	r := g.waitLog(t, "msg", "connection", "route", "/r")
	if r.get("closed_by") != "client" || r.get("client_close_received") != "1000" {
		t.Fatalf("log line %v", r)
	}
}

// panicObserver panics in Opened for one route: a fault inside a connection's goroutine after
// the upgrade, outside the relay's own recover.
type panicObserver struct{ route string }

func (panicObserver) Handshake(string, int)             {}
func (panicObserver) DialLatency(string, time.Duration) {}
func (o panicObserver) Opened(route string) {
	if route == o.route {
		panic("test: observer panic")
	}
}
func (panicObserver) Closed(string, *proxy.Result) {}
func (panicObserver) Limit(string, string)         {}

// TestConnectionPanicContained: a panic in one connection's goroutine (here the observer's
// Opened, after the 101) is recovered and logged with its stack; that client gets 1011, its
// backend connection is closed (not leaked), and other connections keep working. The relay
// pumps' own recover is tested in package proxy (TestPumpPanicContained).
func TestConnectionPanicContained(t *testing.T) {
	b := newBackend(t)
	pb := newWSBackend(t, func(net.Conn) bool { return true })
	cfg, diags := config.Parse([]byte(robustConfig("", fmt.Sprintf(`
route "/ok"    { backend = "ws://%s/" }
route "/panic" { backend = "ws://%s/" }
`, b.addr(), pb.addr))), "test.hcl")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	lb := &logBuffer{}
	gw := gateway.New(cfg, gateway.Options{
		Logger:   slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Observer: panicObserver{route: "/panic"},
	})
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		gw.Drain(ctx)
	}()
	g := &testGateway{Gateway: gw, log: lb}
	addr := g.Addr("pub").String()

	ok := dialRaw(t, addr, "/ok")
	<-b.conns
	bad := dialRaw(t, addr, "/panic")
	if bad.resp.StatusCode != 101 {
		t.Fatalf("status %d", bad.resp.StatusCode)
	}
	if code, reason := bad.readClose(); code != 1011 {
		t.Fatalf("panicking connection: client got %d %q, want 1011", code, reason)
	}
	bad.expectEOF()
	bad.conn.Close()
	// The backend connection of the panicking client is closed, not leaked.
	if e := pb.nextClose(t); e.code != -1 {
		t.Fatalf("backend of the panicking connection got close %d %q, want its TCP connection closed", e.code, e.reason)
	}
	r := g.waitLog(t, "msg", "connection panic")
	if !strings.Contains(r.get("stack"), "panicObserver") {
		t.Fatalf("panic logged without its stack: %v", r)
	}
	// The other connection and new ones are unaffected.
	for i := range 3 {
		msg := []byte(fmt.Sprintf("still here %d", i))
		ok.send(true, wsframe.OpText, msg)
		if f := ok.read(); !bytes.Equal(f.payload, msg) {
			t.Fatalf("echo %q", f.payload)
		}
	}
	again := dialRaw(t, addr, "/ok")
	again.send(true, wsframe.OpText, []byte("new"))
	if f := again.read(); string(f.payload) != "new" {
		t.Fatalf("echo %q", f.payload)
	}
	waitFor(t, "panicking connection untracked", func() bool { return g.ActiveConnections() == 2 })
}
