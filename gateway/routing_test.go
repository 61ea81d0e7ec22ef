package gateway_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

func TestRouting(t *testing.T) {
	a := newBackend(t)
	b := newBackend(t)
	g := startGateway(t, fmt.Sprintf(`
listen "pub"  { address = "127.0.0.1:0" }
listen "priv" { address = "127.0.0.1:0" }
route "/" { backend = "ws://%[1]s/root" }
route "/chat/" {
  backend      = "ws://%[2]s/ws"
  strip_prefix = true
}
route "/chat/admin/" {
  backend = "ws://%[1]s/"
  listen  = ["priv"]
}
route "/exact" { backend = "ws://%[2]s/" }
`, a.addr(), b.addr()))

	cases := []struct {
		listener, path string
		backend        *testBackend
		wantPath       string // request URI the backend sees
	}{
		{"pub", "/chat/room1?x=1", b, "/ws/room1?x=1"}, // subtree, prefix stripped, query kept
		{"pub", "/chat/", b, "/ws"},                    // the subtree root
		{"pub", "/chat/admin/x", b, "/ws/admin/x"},     // the longer route is on "priv" only
		{"priv", "/chat/admin/x", a, "/chat/admin/x"},  // longest prefix wins
		{"pub", "/exact", b, "/exact"},                 // exact route
		{"pub", "/exact/more", a, "/root/exact/more"},  // exact does not match a subtree
		{"pub", "/other", a, "/root/other"},            // catch-all
	}
	for _, tc := range cases {
		t.Run(tc.listener+tc.path, func(t *testing.T) {
			c := dialRaw(t, g.Addr(tc.listener).String(), tc.path)
			if c.resp.StatusCode != 101 {
				t.Fatalf("status %d", c.resp.StatusCode)
			}
			e := tc.backend.next(t, "request")
			if e.request.RequestURI != tc.wantPath {
				t.Fatalf("backend saw %q, want %q", e.request.RequestURI, tc.wantPath)
			}
			h := e.request.Header
			if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("X-Forwarded-For %q", got)
			}
			if got := h.Get("X-Forwarded-Proto"); got != "http" {
				t.Errorf("X-Forwarded-Proto %q", got)
			}
			if got := h.Get("X-Forwarded-Host"); got != g.Addr(tc.listener).String() {
				t.Errorf("X-Forwarded-Host %q", got)
			}
			if got := h.Get("Forwarded"); !strings.HasPrefix(got, "for=127.0.0.1;") {
				t.Errorf("Forwarded %q", got)
			}
			c.conn.Close()
			<-tc.backend.conns
		})
	}
}

func TestForwardedHeadersAndAuth(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, fmt.Sprintf(`
listen "pub" {
  address = "127.0.0.1:0"
  trusted_proxies = ["127.0.0.0/8"]
}
route "/keep" { backend = "ws://%[1]s/" }
route "/strip" {
  backend      = "ws://%[1]s/"
  forward_auth = false
  subprotocols = ["allowed"]
}
`, b.addr()))
	addr := g.Addr("pub").String()
	c := dialRaw(t, addr, "/keep", "Cookie: s=1", "Authorization: Bearer x", "X-Forwarded-For: 203.0.113.9", "X-Custom: yes", "Sec-WebSocket-Extensions: permessage-deflate")
	if c.resp.StatusCode != 101 {
		t.Fatalf("status %d", c.resp.StatusCode)
	}
	if ext := c.resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("extension accepted: %q", ext)
	}
	e := b.next(t, "request")
	h := e.request.Header
	if h.Get("Cookie") != "s=1" || h.Get("Authorization") != "Bearer x" || h.Get("X-Custom") != "yes" {
		t.Fatalf("end-to-end headers lost: %v", h)
	}
	if h.Get("Sec-WebSocket-Extensions") != "" {
		t.Fatalf("permessage-deflate offered to the backend")
	}
	// The peer is a trusted proxy: its X-Forwarded-For chain is kept and the client is
	// the address it names.
	if got := h.Get("X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
		t.Fatalf("X-Forwarded-For %q", got)
	}
	if got := h.Get("Forwarded"); !strings.HasPrefix(got, "for=203.0.113.9;") {
		t.Fatalf("Forwarded %q", got)
	}

	c2 := dialRaw(t, addr, "/strip", "Cookie: s=1", "Authorization: Bearer x", "Sec-WebSocket-Protocol: evil, allowed")
	e = b.next(t, "request")
	h = e.request.Header
	if h.Get("Cookie") != "" || h.Get("Authorization") != "" {
		t.Fatalf("forward_auth = false still forwarded credentials: %v", h)
	}
	if got := h.Get("Sec-WebSocket-Protocol"); got != "allowed" {
		t.Fatalf("subprotocol offer %q, want only the allowed one", got)
	}
	c.conn.Close()
	c2.conn.Close()
}

// TestPathNormalized: routes match the request path after "//", "." and ".." are resolved
// (percent-encoded or not), as nginx's locations do, and the backend gets that path, so a
// path cannot climb out of the route it matched into one its listener does not serve; a path
// that climbs above the root is a 400.
func TestPathNormalized(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, fmt.Sprintf(`
listen "pub"  { address = "127.0.0.1:0" }
listen "priv" { address = "127.0.0.1:0" }
route "/public/" { backend = "ws://%[1]s/" }
route "/admin/" {
  backend = "ws://%[1]s/"
  listen  = ["priv"]
}
`, b.addr()))
	for _, tc := range []struct {
		listener, path string
		status         int
		backendSees    string
	}{
		{"pub", "/public/../admin/x", 404, ""},
		{"pub", "/public/%2e%2e/admin/x", 404, ""},
		{"pub", "/public/a/..%2f..%2fadmin/x", 404, ""},
		{"priv", "/public/../admin/x", 101, "/admin/x"},
		{"pub", "/public//a/./b/", 101, "/public/a/b/"},
		{"pub", "/public/a/..?q=1", 101, "/public/?q=1"},
		{"pub", "/../public/x", 400, ""},
		{"pub", "/public/../../x", 400, ""},
	} {
		c := dialRaw(t, g.Addr(tc.listener).String(), tc.path)
		if c.resp.StatusCode != tc.status {
			t.Fatalf("%s %s: status %d (%s), want %d", tc.listener, tc.path, c.resp.StatusCode, c.body(), tc.status)
		}
		if tc.status == 101 {
			if got := b.next(t, "request").request.RequestURI; got != tc.backendSees {
				t.Errorf("%s %s: backend saw %q, want %q", tc.listener, tc.path, got, tc.backendSees)
			}
			c.conn.Close()
			<-b.conns
		}
	}
	logs := g.log.String()
	if !strings.Contains(logs, `"status":400`) || !strings.Contains(logs, "climbs above the root") {
		t.Errorf("no log line for the 400: %s", logs)
	}
}

// TestForwardedHostQuoted: the client's Host goes to the backend in X-Forwarded-Host as it
// is and in Forwarded as a token or, when it is not one, a quoted-string (RFC 7239 section 4),
// so that a Host holding ',', ';' or '=' (valid in a host name, RFC 3986 sub-delims) cannot add
// an element or a parameter the backend would trust.
func TestForwardedHostQuoted(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, fmt.Sprintf(`
listen "pub" { address = "127.0.0.1:0" }
route "/" { backend = "ws://%s/" }
`, b.addr()))
	for _, tc := range []struct{ host, forwarded string }{
		{"example.com", `for=127.0.0.1;host=example.com;proto=http`},
		{"example.com:8080", `for=127.0.0.1;host="example.com:8080";proto=http`},
		{"[::1]:8080", `for=127.0.0.1;host="[::1]:8080";proto=http`},
		{"x,for=192.0.2.1", `for=127.0.0.1;host="x,for=192.0.2.1";proto=http`},
		{"x;proto=https", `for=127.0.0.1;host="x;proto=https";proto=http`},
	} {
		c := dialRaw(t, g.Addr("pub").String(), "/", "Host: "+tc.host)
		if c.resp.StatusCode != 101 {
			t.Fatalf("Host %q: status %d (%s)", tc.host, c.resp.StatusCode, c.body())
		}
		h := b.next(t, "request").request.Header
		if got := h.Values("Forwarded"); len(got) != 1 || got[0] != tc.forwarded {
			t.Errorf("Host %q: Forwarded %q, want %q", tc.host, got, tc.forwarded)
		}
		if got := h.Get("X-Forwarded-Host"); got != tc.host {
			t.Errorf("Host %q: X-Forwarded-Host %q", tc.host, got)
		}
		c.conn.Close()
		<-b.conns
	}
}

// TestLargeMessageBoundedMemory pushes a 100 MiB message through the gateway in both
// directions' worth of one frame and checks the heap stays small: payload moves in pooled
// chunks, never buffered whole.
func TestLargeMessageBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB transfer")
	}
	const size = 100 << 20
	received := make(chan int64, 1)
	b := newBackend(t, func(b *testBackend) { b.manual = true })
	g := startGateway(t, baseConfig(b.addr(), `max_frame_size = "200MiB"
    max_message_size = "200MiB"`, ""))
	c := dialRaw(t, g.Addr("pub").String(), "/echo")
	bc := <-b.conns
	// Replace the recording reader with a streaming one: read the message in pieces.
	go func() {
		_, r, err := bc.NextReader()
		if err != nil {
			received <- -1
			return
		}
		var n int64
		buf := make([]byte, 64<<10)
		for {
			k, err := r.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		received <- n
	}()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	peak := base
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
		}
	}()

	// One 100 MiB frame, written in 64 KiB pieces with the mask applied on the fly.
	h := wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Masked: true, Length: size, Mask: [4]byte{1, 2, 3, 4}}
	var hb [wsframe.MaxHeaderSize]byte
	c.write(hb[:h.Encode(hb[:])])
	piece := make([]byte, 64<<10)
	c.conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
	for off := 0; off < size; off += len(piece) {
		for i := range piece {
			piece[i] = byte(off + i)
		}
		wsframe.Mask(h.Mask, off, piece)
		c.write(piece)
	}
	select {
	case n := <-received:
		if n != size {
			t.Fatalf("backend received %d bytes, want %d", n, size)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("backend did not receive the message")
	}
	close(stop)
	<-sampled
	growth := int64(peak) - int64(base)
	t.Logf("heap in use: base %d KiB, peak %d KiB, growth %d KiB", base>>10, peak>>10, growth>>10)
	// The test's own 64 KiB buffers and gorilla's reader are included; 8 MiB is generous.
	if growth > 8<<20 {
		t.Fatalf("heap grew by %d KiB while relaying 100 MiB", growth>>10)
	}
}
