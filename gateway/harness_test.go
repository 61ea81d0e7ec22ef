package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/gateway"
	"github.com/wsgate/wsgate/tlsconf"
	"github.com/wsgate/wsgate/wsframe"
)

func TestMain(m *testing.M) {
	// Pebble and certmagic leave process-global goroutines by design (tls_e2e_test.go).
	goleak.VerifyTestMain(m, acmeGoleakIgnores()...)
}

// logBuffer collects the gateway's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testGateway is a running gateway with its log.
type testGateway struct {
	*gateway.Gateway
	log *logBuffer
}

// startGateway parses an HCL configuration (BACKEND in it is replaced by backend's host:port)
// and starts a gateway on it. Listener addresses should be 127.0.0.1:0.
func startGateway(t *testing.T, hcl string) *testGateway {
	t.Helper()
	cfg, diags := config.Parse([]byte(hcl), "test.hcl")
	if diags.HasErrors() {
		t.Fatalf("config: %s", diags.Error())
	}
	lb := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g := gateway.New(cfg, gateway.Options{Logger: log, TLS: func(lc *config.Listener) (gateway.TLSProvider, error) {
		return tlsconf.New(context.Background(), lc.TLS, tlsconf.Options{Logger: log}) // certificate files
	}})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		g.Drain(ctx)
	})
	return &testGateway{Gateway: g, log: lb}
}

// url returns ws://ADDR+path for the named listener.
func (g *testGateway) url(listener, path string) string {
	return "ws://" + g.Addr(listener).String() + path
}

// backendEvent is what a test backend saw.
type backendEvent struct {
	kind    string // "message", "ping", "close", "request"
	typ     int
	data    []byte
	code    int
	reason  string
	request *http.Request
}

// testBackend is a gorilla/websocket server recording what it sees.
type testBackend struct {
	srv    *httptest.Server
	events chan backendEvent
	conns  chan *websocket.Conn
	// echo makes the backend echo messages (default true).
	echo bool
	// protocols is the backend's supported subprotocols.
	protocols []string
	// noCloseReply makes the backend not answer a close frame.
	noCloseReply bool
	// manual makes the backend hand its connection to the test and not read from it.
	manual bool
	// ignorePings makes the backend never answer pings.
	ignorePings bool
	stop        chan struct{}
	wg          sync.WaitGroup
}

func newBackend(t *testing.T, configure ...func(*testBackend)) *testBackend {
	t.Helper()
	b := &testBackend{events: make(chan backendEvent, 1024), conns: make(chan *websocket.Conn, 16), echo: true, stop: make(chan struct{})}
	for _, f := range configure {
		f(b)
	}
	up := websocket.Upgrader{Subprotocols: b.protocols, CheckOrigin: func(*http.Request) bool { return true }, ReadBufferSize: 4096, WriteBufferSize: 4096}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.wg.Add(1)
		defer b.wg.Done()
		b.events <- backendEvent{kind: "request", request: r}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetPingHandler(func(s string) error {
			b.events <- backendEvent{kind: "ping", data: []byte(s)}
			if b.ignorePings {
				return nil
			}
			return c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
		})
		c.SetCloseHandler(func(code int, text string) error {
			b.events <- backendEvent{kind: "close", code: code, reason: text}
			if b.noCloseReply {
				return nil
			}
			return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
		})
		select {
		case b.conns <- c:
		default:
		}
		if b.manual {
			<-b.stop
			return
		}
		for {
			typ, data, err := c.ReadMessage()
			if err != nil {
				if _, ok := err.(*websocket.CloseError); !ok {
					b.events <- backendEvent{kind: "error", reason: err.Error()}
				} else if b.noCloseReply {
					time.Sleep(time.Second) // keep the TCP connection open, unanswered
				}
				return
			}
			b.events <- backendEvent{kind: "message", typ: typ, data: data}
			if b.echo {
				if err := c.WriteMessage(typ, data); err != nil {
					return
				}
			}
		}
	}))
	t.Cleanup(func() {
		close(b.stop)
		b.srv.CloseClientConnections()
		b.srv.Close()
		b.wg.Wait()
	})
	return b
}

// addr is the backend's host:port.
func (b *testBackend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

// next returns the next event of kind (skipping others) or fails after 5 s.
func (b *testBackend) next(t *testing.T, kind string) backendEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-b.events:
			if e.kind == kind {
				return e
			}
		case <-timeout:
			t.Fatalf("backend: no %s event", kind)
		}
	}
}

// none asserts that no event of kind arrives within d.
func (b *testBackend) none(t *testing.T, kind string, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e := <-b.events:
			if e.kind == kind {
				t.Fatalf("backend: unexpected %s event: %+v", kind, e)
			}
		case <-timeout:
			return
		}
	}
}

// rawClient is a frame-level WebSocket client written on wsframe, for sending malformed
// frames and observing exact bytes.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	resp *http.Response
}

// dialRaw performs a handshake with extra header lines ("Name: value") and returns the
// client with the response, whatever its status. A "Host: ..." line replaces the default
// Host (addr); "NOUPGRADE" leaves out the upgrade headers.
func dialRaw(t *testing.T, addr, path string, headers ...string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return upgradeRaw(t, conn, addr, path, headers...)
}

// upgradeRaw sends a WebSocket handshake (see dialRaw) on conn and reads the response.
func upgradeRaw(t *testing.T, conn net.Conn, addr, path string, headers ...string) *rawClient {
	t.Helper()
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var key [16]byte
	rand.Read(key[:])
	host := "Host: " + addr
	hasUpgrade := false
	for _, h := range headers {
		if strings.HasPrefix(strings.ToLower(h), "upgrade:") || h == "NOUPGRADE" {
			hasUpgrade = true
		}
		if strings.HasPrefix(strings.ToLower(h), "host:") {
			host = h
		}
	}
	req := "GET " + path + " HTTP/1.1\r\n" + host + "\r\n"
	if !hasUpgrade {
		req += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\n"
	}
	for _, h := range headers {
		if h != "NOUPGRADE" && h != host {
			req += h + "\r\n"
		}
	}
	req += "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading handshake response: %v", err)
	}
	return &rawClient{t: t, conn: conn, br: br, resp: resp}
}

// body returns the response body of a refused handshake.
func (c *rawClient) body() string {
	b, _ := io.ReadAll(c.resp.Body)
	return string(b)
}

// send writes one client frame (masked with a random key unless unmasked is set).
func (c *rawClient) send(fin bool, op wsframe.Opcode, payload []byte) {
	c.t.Helper()
	h := wsframe.Header{Fin: fin, Opcode: op, Masked: true}
	rand.Read(h.Mask[:])
	c.write(wsframe.AppendFrame(nil, h, payload))
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// frame is a frame read by the raw client.
type frame struct {
	h       wsframe.Header
	payload []byte
}

// read reads the next frame; it fails the test on error.
func (c *rawClient) read() frame {
	c.t.Helper()
	f, err := c.tryRead()
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

func (c *rawClient) tryRead() (frame, error) {
	var hb [wsframe.MaxHeaderSize]byte
	h, err := wsframe.ReadHeader(c.br, &hb)
	if err != nil {
		return frame{}, err
	}
	if h.Masked {
		return frame{}, fmt.Errorf("server frame is masked")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return frame{}, err
	}
	return frame{h: h, payload: p}, nil
}

// readClose reads frames until a close and returns its code and reason.
func (c *rawClient) readClose() (wsframe.CloseCode, string) {
	c.t.Helper()
	for {
		f := c.read()
		if f.h.Opcode == wsframe.OpClose {
			code, reason, err := wsframe.ParseClosePayload(f.payload)
			if err != nil {
				c.t.Fatalf("bad close payload %x: %v", f.payload, err)
			}
			return code, string(reason)
		}
	}
}

// expectEOF asserts the server closes the TCP connection (after any frames).
func (c *rawClient) expectEOF() {
	c.t.Helper()
	for {
		if _, err := c.tryRead(); err != nil {
			return
		}
	}
}
