package gateway_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestReloadRecreatesTLS: a reload that changes what a running TLS provider cannot change in
// place (min_version, curves) builds a new provider: new handshakes get the new settings at
// once, a connection opened before the reload keeps relaying, and a change whose new provider
// cannot be built (a missing certificate file) keeps the old settings with an error logged.
func TestReloadRecreatesTLS(t *testing.T) {
	b := newBackend(t)
	cert, key := selfSigned(t)
	cfg := func(tlsExtra, certFile string) string { return tlsFileConfig(b.addr(), certFile, key, tlsExtra) }
	g := startGateway(t, cfg(`min_version = "1.2"`, cert))
	url := "wss://" + g.Addr("pub").String() + "/echo"
	dial := func(tc *tls.Config) (*websocket.Conn, error) {
		tc.InsecureSkipVerify = true
		d := websocket.Dialer{TLSClientConfig: tc, HandshakeTimeout: 5 * time.Second}
		c, _, err := d.Dial(url, nil)
		return c, err
	}
	echo := func(c *websocket.Conn, msg string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, got, err)
		}
	}
	tls12 := func() *tls.Config { return &tls.Config{MaxVersion: tls.VersionTLS12} }
	refused := func(tc *tls.Config, why string) {
		t.Helper()
		if c, err := dial(tc); err == nil {
			c.Close()
			t.Fatal(why)
		}
	}

	old, err := dial(tls12())
	if err != nil {
		t.Fatalf("TLS 1.2 client before the reload: %v", err)
	}
	defer old.Close()
	echo(old, "before")

	// min_version 1.3 and P-256 only: a new provider.
	if err := g.Reload(mustParse(t, cfg(`min_version = "1.3"
    curves = ["secp256r1"]`, cert))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.log.String(), `"msg":"tls settings changed; new handshakes use them"`) {
		t.Fatalf("no log line for the new TLS settings:\n%s", g.log.String())
	}
	refused(tls12(), "a TLS 1.2 client connected after min_version moved to 1.3")
	refused(&tls.Config{CurvePreferences: []tls.CurveID{tls.X25519}}, "an X25519-only client connected after curves became P-256 only")
	c, err := dial(&tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP256}})
	if err != nil {
		t.Fatalf("TLS 1.3 P-256 client after the reload: %v", err)
	}
	if st := c.UnderlyingConn().(*tls.Conn).ConnectionState(); st.Version != tls.VersionTLS13 || st.CurveID != tls.CurveP256 {
		t.Fatalf("negotiated version %x curve %v, want TLS 1.3 with P-256", st.Version, st.CurveID)
	}
	echo(c, "after")
	c.Close()
	echo(old, "still open") // the connection from before the reload is untouched

	// Back to 1.2, but the new provider cannot be built: the 1.3 settings stay.
	if err := g.Reload(mustParse(t, cfg(`min_version = "1.2"`, cert+".missing"))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.log.String(), `"msg":"tls settings change failed; keeping the old settings"`) {
		t.Fatalf("no error logged for the failed TLS change:\n%s", g.log.String())
	}
	refused(tls12(), "a failed TLS change took effect")
	if c, err := dial(&tls.Config{}); err != nil {
		t.Fatalf("TLS 1.3 client after the failed change: %v", err)
	} else {
		c.Close()
	}
}

// TestReloadMovesHTTPAddress: a reload that changes only a TLS listener's http_address moves
// that listener (the https redirect answers on the new port, the old port refuses), removing
// it closes the port, and a new address that cannot be bound fails the reload with nothing
// changed. The wss listener itself is never rebound.
func TestReloadMovesHTTPAddress(t *testing.T) {
	b := newBackend(t)
	cert, key := selfSigned(t)
	freePort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	cfg := func(httpAddr string) string {
		extra := ""
		if httpAddr != "" {
			extra = fmt.Sprintf("http_address = %q", httpAddr)
		}
		return tlsFileConfig(b.addr(), cert, key, extra)
	}
	hc := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	redirects := func(addr string) {
		t.Helper()
		resp, err := hc.Get("http://" + addr + "/chat?x=1")
		if err != nil {
			t.Fatalf("http_address %s: %v", addr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
			t.Fatalf("http_address %s: %d Location %q, want 308 to https", addr, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	refuses := func(addr string) {
		t.Helper()
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts connections", addr)
		}
	}

	a1, a2 := freePort(), freePort()
	g := startGateway(t, cfg(a1))
	wss := g.Addr("pub").String()
	redirects(a1)

	if err := g.Reload(mustParse(t, cfg(a2))); err != nil {
		t.Fatal(err)
	}
	redirects(a2)
	refuses(a1)
	if got := g.Addr("pub").String(); got != wss {
		t.Fatalf("the wss listener moved from %s to %s", wss, got)
	}
	if !strings.Contains(g.log.String(), `"msg":"http_address moved"`) {
		t.Fatalf("no log line for the move:\n%s", g.log.String())
	}

	// A new address that is taken: the reload fails and a2 keeps answering.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := g.Reload(mustParse(t, cfg(busy.Addr().String()))); err == nil || !strings.Contains(err.Error(), "http_address") {
		t.Fatalf("reload onto a taken http_address: %v, want an http_address error", err)
	}
	redirects(a2)

	// Removed, then back.
	if err := g.Reload(mustParse(t, cfg(""))); err != nil {
		t.Fatal(err)
	}
	refuses(a2)
	if err := g.Reload(mustParse(t, cfg(a1))); err != nil {
		t.Fatal(err)
	}
	redirects(a1)
}

// tlsFileConfig is baseConfig with listener "pub" serving wss:// from certFile and keyFile,
// with tlsExtra added to its tls block.
func tlsFileConfig(backend, certFile, keyFile, tlsExtra string) string {
	listen := fmt.Sprintf(`listen "pub" {
  address = "127.0.0.1:0"
  tls {
    cert_file = %q
    key_file  = %q
    %s
  }
}`, certFile, keyFile, tlsExtra)
	return strings.Replace(baseConfig(backend, "", ""), `listen "pub" { address = "127.0.0.1:0" }`, listen, 1)
}
