package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestHandshakeTable covers DESIGN.md's handshake answers, row by row: the status, the extra
// header the table names, a short body, and a log line.
func TestHandshakeTable(t *testing.T) {
	b := newBackend(t, func(b *testBackend) { b.protocols = []string{"chat.v2", "chat.v1"} })
	refused := listenRefused(t)
	silent := silentBackend(t)
	answers200 := httpBackend(t, http.StatusOK, "")
	answers404 := httpBackend(t, http.StatusNotFound, "")
	badAccept := httpBackend(t, http.StatusSwitchingProtocols, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n")
	// A refusal with a body: closing the response's body reads from the dial's pooled head
	// reader, which must not be back in its pool yet.
	answers404Body := rawBackend(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		fmt.Fprint(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
		time.Sleep(100 * time.Millisecond)
	})
	g := startGateway(t, fmt.Sprintf(`
listen "pub" { address = "127.0.0.1:0" }
limits {
  handshake_timeout = "2s"
  backend_handshake_timeout = "300ms"
  dial_timeout = "1s"
}
route "/echo" {
  backend = "ws://%[1]s/"
  allowed_origins = ["https://good.example"]
}
route "/capped" {
  backend = "ws://%[1]s/"
  limits { max_connections = 1 }
}
route "/perip" {
  backend = "ws://%[1]s/"
  limits { max_connections_per_ip = 1 }
}
route "/hsrate" {
  backend = "ws://%[1]s/"
  limits { handshakes_per_ip_per_second = 1 }
}
route "/refused" { backend = "ws://%[2]s/" }
route "/silent"  { backend = "ws://%[3]s/" }
route "/ok200"   { backend = "ws://%[4]s/" }
route "/nf404"   { backend = "ws://%[5]s/" }
route "/badaccept" { backend = "ws://%[6]s/" }
route "/nf404body" { backend = "ws://%[7]s/" }
`, b.addr(), refused, silent, answers200, answers404, badAccept, answers404Body))
	addr := g.Addr("pub").String()
	origin := "Origin: https://good.example"

	cases := []struct {
		name, path string
		headers    []string
		status     int
		header     string // "Name: value" the answer must carry
	}{
		{"no route", "/nowhere", nil, 404, ""},
		{"not an upgrade", "/echo", []string{"NOUPGRADE"}, 426, "Upgrade: websocket"},
		{"POST", "/echo", []string{origin, "X-Method: POST"}, 0, ""}, // replaced below
		{"missing key", "/echo", []string{"NOUPGRADE", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13", origin}, 400, ""},
		{"invalid key", "/echo", []string{"NOUPGRADE", "Upgrade: websocket", "Connection: upgrade", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: short", origin}, 400, ""},
		{"invalid Host", "/echo", []string{"Host: a b", origin}, 400, ""},
		{"Host with a path", "/echo", []string{"Host: example.com/x", origin}, 400, ""},
		{"space in a header name", "/echo", []string{"X Custom: 1", origin}, 400, ""},
		{"version 8", "/echo", []string{"NOUPGRADE", "Upgrade: WebSocket", "Connection: keep-alive, Upgrade", "Sec-WebSocket-Version: 8", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", origin}, 426, "Sec-WebSocket-Version: 13"},
		{"origin not allowed", "/echo", []string{"Origin: https://evil.example"}, 403, ""},
		{"backend refused", "/refused", nil, 502, ""},
		{"backend answers 200", "/ok200", nil, 502, ""},
		{"backend answers 404", "/nf404", nil, 502, ""},
		{"backend answers 404 with a body", "/nf404body", nil, 502, ""},
		{"backend wrong accept", "/badaccept", nil, 502, ""},
		{"backend handshake timeout", "/silent", nil, 504, ""},
	}
	for _, tc := range cases {
		if tc.name == "POST" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr, tc.path, tc.headers...)
			if c.resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", c.resp.StatusCode, tc.status, c.body())
			}
			if tc.header != "" {
				name, value, _ := strings.Cut(tc.header, ": ")
				if got := c.resp.Header.Get(name); got != value {
					t.Fatalf("%s: %q, want %q", name, got, value)
				}
			}
			if body := c.body(); body == "" || len(body) > 200 {
				t.Fatalf("body %q: want a short explanation", body)
			}
		})
	}

	t.Run("POST", func(t *testing.T) {
		conn, _ := net.Dial("tcp", addr)
		defer conn.Close()
		fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\nContent-Length: 0\r\n\r\n", origin)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != 400 {
			t.Fatalf("got %v %v, want 400", resp, err)
		}
	})

	t.Run("HTTP versions", func(t *testing.T) {
		for version, want := range map[string]int{"HTTP/1.0": 400, "HTTP/2.0": 505, "HTTP/3.0": 505, "HTTP/1.2": 101} {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET /echo %s\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n\r\n", version, origin)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			conn.Close()
			if err != nil || resp.StatusCode != want {
				t.Errorf("%s: got %v %v, want %d", version, resp, err, want)
			}
		}
	})

	t.Run("headers too large", func(t *testing.T) {
		c := dialRaw(t, addr, "/echo", origin, "X-Big: "+strings.Repeat("a", 32<<10))
		if c.resp.StatusCode != 431 {
			t.Fatalf("status %d, want 431", c.resp.StatusCode)
		}
	})

	t.Run("per-IP connection cap", func(t *testing.T) {
		first := dialRaw(t, addr, "/perip")
		if first.resp.StatusCode != 101 {
			t.Fatalf("first: %d", first.resp.StatusCode)
		}
		second := dialRaw(t, addr, "/perip")
		if second.resp.StatusCode != 429 || second.resp.Header.Get("Retry-After") == "" {
			t.Fatalf("second: %d Retry-After %q, want 429 with Retry-After", second.resp.StatusCode, second.resp.Header.Get("Retry-After"))
		}
		first.conn.Close()
		waitFor(t, "slot released", func() bool {
			c := dialRaw(t, addr, "/perip")
			defer c.conn.Close()
			return c.resp.StatusCode == 101
		})
	})

	t.Run("route connection cap", func(t *testing.T) {
		first := dialRaw(t, addr, "/capped")
		if first.resp.StatusCode != 101 {
			t.Fatalf("first: %d", first.resp.StatusCode)
		}
		second := dialRaw(t, addr, "/capped")
		if second.resp.StatusCode != 503 {
			t.Fatalf("second: %d, want 503", second.resp.StatusCode)
		}
		// The established connection keeps working.
		first.send(true, 0x1, []byte("still"))
		if f := first.read(); string(f.payload) != "still" {
			t.Fatalf("echo %q", f.payload)
		}
		first.conn.Close()
	})

	t.Run("per-IP handshake rate", func(t *testing.T) {
		first := dialRaw(t, addr, "/hsrate")
		if first.resp.StatusCode != 101 {
			t.Fatalf("first: %d", first.resp.StatusCode)
		}
		second := dialRaw(t, addr, "/hsrate")
		if second.resp.StatusCode != 429 || second.resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("second: %d Retry-After %q, want 429 with Retry-After: 1", second.resp.StatusCode, second.resp.Header.Get("Retry-After"))
		}
	})

	t.Run("subprotocol negotiation", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/echo", &websocket.DialOptions{
			Subprotocols: []string{"chat.v1", "chat.v2"},
			HTTPHeader:   http.Header{"Origin": {"https://good.example"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		// gorilla's server picks its own first supported protocol present in the offer.
		if c.Subprotocol() != "chat.v2" {
			t.Fatalf("subprotocol %q", c.Subprotocol())
		}
	})

	// Every refusal above wrote one log line with its status and reason.
	logs := g.log.String()
	for _, want := range []string{`"status":404`, `"status":426`, `"status":400`, `"status":505`, `"status":403`, `"status":431`, `"status":502`, `"status":503`, `"status":504`, `"status":429`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no refusal log line with %s", want)
		}
	}
}

// listenRefused returns an address where nothing listens.
func listenRefused(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// silentBackend accepts TCP connections and never answers.
func silentBackend(t *testing.T) string {
	return rawBackend(t, func(c net.Conn) {
		io.Copy(io.Discard, c)
	})
}

// httpBackend answers every request with status and extra header lines, then closes.
func httpBackend(t *testing.T, status int, headers string) string {
	return rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\n\r\n", status, http.StatusText(status), headers)
		time.Sleep(100 * time.Millisecond)
	})
}

// rawBackend serves each TCP connection with handle.
func rawBackend(t *testing.T, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 64)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
		time.Sleep(150 * time.Millisecond) // let the handlers see their closed conns
	})
	return ln.Addr().String()
}
