package gateway_test

import (
	"crypto/tls"
	"fmt"
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
	cfg := func(tlsExtra, certFile string) string {
		listen := fmt.Sprintf(`listen "pub" {
  address = "127.0.0.1:0"
  tls {
    cert_file = %q
    key_file  = %q
    %s
  }
}`, certFile, key, tlsExtra)
		return strings.Replace(baseConfig(b.addr(), "", ""), `listen "pub" { address = "127.0.0.1:0" }`, listen, 1)
	}
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
