package gateway_test

// End-to-end wss:// through the gateway with certificates from a real ACME server (Pebble,
// in process). One gateway has two TLS listeners, each with its own Pebble: "http01" gets
// its certificate over HTTP-01 (answered on its http_address; tls-alpn-01 disabled) and
// "alpn" over TLS-ALPN-01 (answered on the wss listener itself; no http_address at all).
// Clients trust only Pebble's root. One test, so that the two issuances overlap and
// certmagic's lock-file refresher (it wakes every 5 s) is waited for once.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/gateway"
	"github.com/wsgate/wsgate/internal/pebbletest"
	"github.com/wsgate/wsgate/tlsconf"
)

// acmeHost is the name the "alpn" listener (and the browser) uses; "http01" uses
// "http01.gw.test". Two names, because certmagic keeps the challenges in progress in one
// process-global map keyed by name: two issuers solving different challenge types for the
// same name at the same moment overwrite each other's entry. Pebble's DNS (and Chromium's
// host-resolver-rules) resolve them to 127.0.0.1.
const acmeHost = "gw.test"

// acmeListener is one TLS listener of the test gateway with the Pebble that issues its
// certificate.
type acmeListener struct {
	name      string
	domain    string // the one name in its acme block
	challenge string // the only enabled challenge
	tlsPort   int    // the wss listener; TLS-ALPN-01 is answered here
	httpPort  int    // http_address (HTTP-01 and the https redirect); 0 if none
	pebble    *pebbletest.Server
}

// wssURL is wss://DOMAIN:PORT+path on this listener.
func (l *acmeListener) wssURL(path string) string {
	return "wss://" + net.JoinHostPort(l.domain, strconv.Itoa(l.tlsPort)) + path
}

// dialAddr is where clients connect, whatever the URL's host says.
func (l *acmeListener) dialAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.tlsPort))
}

// wssClient is an HTTP client for coder/websocket that trusts only Pebble's root (or, with
// pebbleRoot false, only the system roots), verifies the listener's domain, and dials the
// listener on 127.0.0.1.
func (l *acmeListener) wssClient(t *testing.T, pebbleRoot bool) *http.Client {
	t.Helper()
	cfg := &tls.Config{ServerName: l.domain}
	if pebbleRoot {
		cfg.RootCAs = l.pebble.RootPool()
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, l.dialAddr())
		},
		TLSClientConfig: cfg,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// acmeGateway is the running test gateway.
type acmeGateway struct {
	*testGateway
	backend *testBackend
	http01  *acmeListener
	alpn    *acmeListener
}

// freePort returns a loopback port that was free a moment ago. The gateway binds listeners
// from configuration addresses itself, so the port is released before the gateway takes it;
// Pebble must know it earlier, when it starts.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// acmeGoleakIgnores are the goroutines of an ACME test that are process-global by design
// (harness_test.go's TestMain uses the same list):
//   - Pebble's VA task loop (pebbletest.GoleakIgnores: Pebble has no shutdown API);
//   - certmagic's internal rate limiter, one per CA directory + account email, kept in a
//     package-level map and never stopped (acmeclient.go: "TODO: stop rate limiter when it
//     is garbage-collected").
func acmeGoleakIgnores() []goleak.Option {
	return append(pebbletest.GoleakIgnores(),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"))
}

// acmeLeakCheck registers (call it first, so it runs last) a goroutine check for a test that
// runs Pebble and certmagic. It waits up to 15 s: certmagic's lock-file refresher
// (keepLockfileFresh) sleeps 5 s between looks at its lock, so it ends up to 5 s after the
// issuance that took the lock. TestMain's own check waits well under a second.
func acmeLeakCheck(t *testing.T) {
	t.Helper()
	opts := append(acmeGoleakIgnores(), goleak.IgnoreCurrent())
	t.Cleanup(func() {
		start := time.Now()
		for {
			err := goleak.Find(opts...)
			if err == nil {
				t.Logf("goroutines gone %v after the test", time.Since(start).Round(time.Millisecond))
				return
			}
			if time.Since(start) > 15*time.Second {
				t.Errorf("goroutines left after the test: %v", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// startACMEGateway starts two Pebbles, a gorilla echo backend and a gateway with:
//   - listener "http01" on 127.0.0.1:P1, acme for http01.gw.test with
//     challenges = ["http-01"] and http_address 127.0.0.1:H1;
//   - listener "alpn" on 127.0.0.1:P2, acme for gw.test with challenges = ["tls-alpn-01"]
//     and no http_address;
//   - listener "plain" on 127.0.0.1:0 (ws://);
//   - route /echo (every listener) and route /secure with tls_only = true.
//
// It returns once the gateway is ready, that is, once both certificates were issued.
func startACMEGateway(t *testing.T) *acmeGateway {
	t.Helper()
	backend := newBackend(t)
	for attempt := 1; ; attempt++ {
		g, err := tryStartACMEGateway(t, backend)
		if err == nil {
			return g
		}
		// A port picked by freePort can be taken (by any process's outgoing connection)
		// before the gateway binds it; start over with new ports and new Pebbles.
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; retrying with other ports", attempt, err)
	}
}

func tryStartACMEGateway(t *testing.T, backend *testBackend) (*acmeGateway, error) {
	t.Helper()
	g := &acmeGateway{
		backend: backend,
		http01:  &acmeListener{name: "http01", domain: "http01." + acmeHost, challenge: "http-01", tlsPort: freePort(t), httpPort: freePort(t)},
		alpn:    &acmeListener{name: "alpn", domain: acmeHost, challenge: "tls-alpn-01", tlsPort: freePort(t)},
	}
	// Pebble needs an HTTP-01 port for "alpn" too; nothing listens on port 1.
	g.http01.pebble = pebbletest.Start(t, g.http01.httpPort, g.http01.tlsPort)
	g.alpn.pebble = pebbletest.Start(t, 1, g.alpn.tlsPort)

	var hcl strings.Builder
	for _, l := range []*acmeListener{g.http01, g.alpn} {
		httpAddr := ""
		if l.httpPort != 0 {
			httpAddr = fmt.Sprintf("http_address = \"127.0.0.1:%d\"", l.httpPort)
		}
		fmt.Fprintf(&hcl, `
listen %q {
  address = "127.0.0.1:%d"
  tls {
    acme {
      domains    = [%q]
      ca         = %q
      ca_root    = %q
      storage    = %q
      challenges = [%q]
    }
    %s
  }
}
`, l.name, l.tlsPort, l.domain, l.pebble.DirectoryURL, l.pebble.CARootPEMFile, t.TempDir(), l.challenge, httpAddr)
	}
	fmt.Fprintf(&hcl, `
listen "plain" {
  address = "127.0.0.1:0"
}
route "/echo" {
  backend = "ws://%s/"
}
route "/secure" {
  backend  = "ws://%s/"
  tls_only = true
}
`, g.backend.addr(), g.backend.addr())
	cfg, diags := config.Parse([]byte(hcl.String()), "acme-test.hcl")
	if diags.HasErrors() {
		t.Fatalf("config: %s", diags.Error())
	}

	lb := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	gw := gateway.New(cfg, gateway.Options{
		Logger: log,
		// As commands.go does, with the ports Pebble validates on and Pebble's DNS.
		TLS: func(lc *config.Listener) (gateway.TLSProvider, error) {
			l := g.http01
			if lc.Name == g.alpn.name {
				l = g.alpn
			}
			return tlsconf.New(context.Background(), lc.TLS, tlsconf.Options{
				Logger:         log,
				AltTLSALPNPort: l.tlsPort,
				AltHTTPPort:    l.httpPort,
				DNSResolver:    l.pebble.DNSAddr,
			})
		},
	})
	if err := gw.Start(); err != nil {
		return nil, err
	}
	g.testGateway = &testGateway{Gateway: gw, log: lb}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gw.Drain(ctx)
		if t.Failed() {
			t.Logf("gateway log:\n%s", lb.String())
		}
	})

	start := time.Now()
	for !gw.Ready() {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("gateway not ready (no certificates) after 60 s; log:\n%s", lb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("certificates via http-01 and tls-alpn-01 ready after %v", time.Since(start).Round(time.Millisecond))
	for _, l := range []*acmeListener{g.http01, g.alpn} {
		if n := l.pebble.OrdersFor(l.domain); n != 1 {
			t.Errorf("%s: Pebble saw %d orders for %s, want 1", l.name, n, l.domain)
		}
	}
	return g, nil
}

// echoOnce dials url with client, sends msg and expects it back, then closes normally.
func echoOnce(t *testing.T, client *http.Client, url, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("dial %s: status %d", url, resp.StatusCode)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	typ, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText || string(data) != msg {
		t.Fatalf("echo = %v %q, want text %q", typ, data, msg)
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// expectForwardedProto checks the backend's next handshake request.
func expectForwardedProto(t *testing.T, b *testBackend, want string) {
	t.Helper()
	req := b.next(t, "request").request
	if p := req.Header.Get("X-Forwarded-Proto"); p != want {
		t.Errorf("X-Forwarded-Proto = %q, want %q", p, want)
	}
}

func TestACMEEndToEnd(t *testing.T) {
	acmeLeakCheck(t)
	g := startACMEGateway(t)

	for _, l := range []*acmeListener{g.http01, g.alpn} {
		t.Run(l.challenge+"/wss echo", func(t *testing.T) {
			echoOnce(t, l.wssClient(t, true), l.wssURL("/echo"), "hello over "+l.challenge)
			expectForwardedProto(t, g.backend, "https")
		})

		t.Run(l.challenge+"/served certificate", func(t *testing.T) {
			d := &tls.Dialer{Config: &tls.Config{RootCAs: l.pebble.RootPool(), ServerName: l.domain, NextProtos: []string{"h2", "http/1.1"}}}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := d.DialContext(ctx, "tcp", l.dialAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			st := c.(*tls.Conn).ConnectionState()
			if st.NegotiatedProtocol != "http/1.1" {
				t.Errorf("ALPN = %q, want http/1.1 (never h2)", st.NegotiatedProtocol)
			}
			leaf := st.PeerCertificates[0]
			if err := leaf.VerifyHostname(l.domain); err != nil {
				t.Error(err)
			}
			if err := leaf.CheckSignatureFrom(l.pebble.IntermediateCert()); err != nil {
				t.Errorf("leaf not signed by this listener's Pebble: %v", err)
			}
		})

		t.Run(l.challenge+"/client without Pebble's root refuses", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, l.wssURL("/echo"), &websocket.DialOptions{HTTPClient: l.wssClient(t, false)})
			if err == nil {
				c.CloseNow()
				t.Fatal("wss dial trusting only the system roots succeeded")
			}
			g.backend.none(t, "request", 50*time.Millisecond)
		})
	}

	t.Run("http_address redirects to https with 308", func(t *testing.T) {
		client := &http.Client{
			Timeout:       5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{DisableKeepAlives: true},
		}
		port := strconv.Itoa(g.http01.httpPort)
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+port+"/echo/x?a=1&b=2", nil)
		req.Host = net.JoinHostPort(g.http01.domain, port)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect {
			t.Fatalf("status %d, want 308", resp.StatusCode)
		}
		if loc, want := resp.Header.Get("Location"), "https://"+g.http01.domain+"/echo/x?a=1&b=2"; loc != want {
			t.Fatalf("Location %q, want %q", loc, want)
		}
	})

	t.Run("tls_only route", func(t *testing.T) {
		plain := g.Addr("plain").String()
		rc := dialRaw(t, plain, "/secure")
		if rc.resp.StatusCode != http.StatusForbidden {
			t.Fatalf("plain ws to a tls_only route: status %d, want 403", rc.resp.StatusCode)
		}
		rc.conn.Close()
		g.backend.none(t, "request", 50*time.Millisecond)

		echoOnce(t, g.alpn.wssClient(t, true), g.alpn.wssURL("/secure"), "secure hello")
		expectForwardedProto(t, g.backend, "https")

		// Routes without tls_only still work on the plain listener, as http.
		echoOnce(t, &http.Client{}, "ws://"+plain+"/echo", "plain hello")
		expectForwardedProto(t, g.backend, "http")
	})

	t.Run("browser", func(t *testing.T) { testBrowser(t, g) })
}
