package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/pebbletest"
)

// acmeRig is Pebble plus the two listeners its VA validates against, served by a Manager
// the way the gateway will: HTTPHandler on the HTTP port, TLSConfig on the TLS port.
type acmeRig struct {
	pebble     *pebbletest.Server
	httpPort   int
	tlsAddr    string
	challenges atomic.Int32 // HTTP-01 requests that reached HTTPHandler
	tlsSrv     *echoServer
}

func startRig(t *testing.T, tlsBlock func(p *pebbletest.Server) *config.TLS) (*acmeRig, *Manager, *testLog) {
	t.Helper()
	httpLn, tlsLn := listen(t), listen(t)
	r := &acmeRig{httpPort: port(httpLn), tlsAddr: tlsLn.Addr().String()}
	r.pebble = pebbletest.Start(t, port(httpLn), port(tlsLn))
	log, logs := newTestLog(t)
	m, err := New(context.Background(), tlsBlock(r.pebble), Options{
		Logger:         log,
		AltHTTPPort:    port(httpLn),
		AltTLSALPNPort: port(tlsLn),
		DNSResolver:    r.pebble.DNSAddr,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	h := m.HTTPHandler()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/.well-known/acme-challenge/") {
			r.challenges.Add(1)
		}
		h.ServeHTTP(w, req)
	})}
	go hs.Serve(httpLn)
	t.Cleanup(func() { hs.Close() })
	r.tlsSrv = serveEcho(t, tlsLn, m.TLSConfig())
	return r, m, logs
}

// trustPebble trusts Pebble's root only; the intermediate must come from the served chain.
func trustPebble(p *pebbletest.Server) *tls.Config {
	return &tls.Config{RootCAs: p.RootPool()}
}

func acmeBlock(p *pebbletest.Server, storage string, challenges ...string) *config.TLS {
	return &config.TLS{ACME: &config.ACME{
		Domains:    []string{"gw.test"},
		Email:      "ops@gw.test",
		CA:         p.DirectoryURL,
		CARoot:     p.CARootPEMFile,
		Storage:    storage,
		Challenges: challenges,
	}}
}

func checkVerified(t *testing.T, addr, name string, p *pebbletest.Server) *x509.Certificate {
	t.Helper()
	c, err := dial(t, addr, name, trustPebble(p))
	if err != nil {
		t.Fatalf("handshake with SNI %s trusting only Pebble's root: %v", name, err)
	}
	defer c.Close()
	st := c.ConnectionState()
	if st.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", st.NegotiatedProtocol)
	}
	if len(st.VerifiedChains) == 0 || !st.VerifiedChains[0][len(st.VerifiedChains[0])-1].Equal(p.RootCert()) {
		t.Errorf("chain does not end at Pebble's root")
	}
	return st.PeerCertificates[0]
}

func TestACMEHTTP01AndRestart(t *testing.T) {
	leakCheck(t)
	storage := t.TempDir()
	start := time.Now()
	rig, m, _ := startRig(t, func(p *pebbletest.Server) *config.TLS { return acmeBlock(p, storage, "http-01") })
	if got := m.TLSConfig().NextProtos; !slices.Equal(got, []string{"http/1.1"}) {
		t.Errorf("NextProtos %q with tls-alpn-01 disabled", got)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("New blocked for %v; ACME must not block startup", time.Since(start))
	}
	took := waitFor(t, 60*time.Second, "certificate for gw.test", m.Ready)
	t.Logf("HTTP-01 issuance took %v", took)

	leaf := checkVerified(t, rig.tlsAddr, "gw.test", rig.pebble)
	if rig.challenges.Load() == 0 {
		t.Error("no HTTP-01 request reached HTTPHandler")
	}
	if n := rig.tlsSrv.acmeTLSHandshakes(); n != 0 {
		t.Errorf("%d acme-tls/1 handshakes with tls-alpn-01 disabled", n)
	}
	if n := rig.pebble.OrdersFor("gw.test"); n != 1 {
		t.Errorf("Pebble saw %d orders for gw.test, want 1", n)
	}
	if exp := m.Expiry(); !exp["gw.test"].Equal(leaf.NotAfter) {
		t.Errorf("Expiry() = %v, want gw.test %v", exp, leaf.NotAfter)
	}
	// A name outside domains gets nothing (and no order), even though the listener serves it.
	if c, err := dial(t, rig.tlsAddr, "other.test", trustPebble(rig.pebble)); err == nil {
		c.Close()
		t.Error("handshake for other.test verified")
	}
	if n := rig.pebble.OrdersFor("other.test"); n != 0 {
		t.Errorf("Pebble saw %d orders for other.test", n)
	}

	// Restart: the CA is gone; a new Manager on the same storage serves the stored certificate.
	m.Close()
	requests := rig.pebble.Requests()
	rig.pebble.Close()
	log, _ := newTestLog(t)
	m2, err := New(context.Background(), acmeBlock(rig.pebble, storage, "http-01"), Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	took = waitFor(t, 10*time.Second, "stored certificate loaded", m2.Ready)
	t.Logf("restart: stored certificate ready after %v", took)
	srv2 := serveEcho(t, listen(t), m2.TLSConfig())
	again := checkVerified(t, srv2.ln.Addr().String(), "gw.test", rig.pebble)
	if !again.Equal(leaf) {
		t.Error("restarted Manager serves a different certificate")
	}
	if rig.pebble.Requests() != requests {
		t.Errorf("Pebble got %d requests after the restart", rig.pebble.Requests()-requests)
	}
	// The restarted manager without a CA still answers the ACME listener's plain requests.
	m2.Close()
}

func TestACMETLSALPN01(t *testing.T) {
	leakCheck(t)
	storage := t.TempDir()
	rig, m, _ := startRig(t, func(p *pebbletest.Server) *config.TLS { return acmeBlock(p, storage, "tls-alpn-01") })
	if got := m.TLSConfig().NextProtos; !slices.Equal(got, []string{"http/1.1", "acme-tls/1"}) {
		t.Errorf("NextProtos %q, want [http/1.1 acme-tls/1]", got)
	}
	took := waitFor(t, 60*time.Second, "certificate for gw.test", m.Ready)
	t.Logf("TLS-ALPN-01 issuance took %v", took)
	checkVerified(t, rig.tlsAddr, "gw.test", rig.pebble)
	if rig.tlsSrv.acmeTLSHandshakes() == 0 {
		t.Error("no acme-tls/1 handshake reached the TLS listener")
	}
	if n := rig.challenges.Load(); n != 0 {
		t.Errorf("%d HTTP-01 requests with http-01 disabled", n)
	}
	// Without HTTP-01, the HTTP handler only redirects.
	w := httptest.NewRecorder()
	m.HTTPHandler().ServeHTTP(w, httptest.NewRequest("GET", "http://gw.test/.well-known/acme-challenge/x", nil))
	if w.Code != http.StatusPermanentRedirect {
		t.Errorf("challenge path with http-01 disabled: %d, want 308", w.Code)
	}
}

func TestACMEOnDemand(t *testing.T) {
	leakCheck(t)
	storage := t.TempDir()
	var asked atomic.Value
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Query().Get("domain")
		asked.Store(d)
		if d == "asked.test" {
			return // 200
		}
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer ask.Close()

	rig, m, logs := startRig(t, func(p *pebbletest.Server) *config.TLS {
		b := acmeBlock(p, storage)
		b.ACME.Domains = nil
		b.OnDemand = &config.OnDemand{Ask: ask.URL + "/check?token=s3cret", Allow: []string{"*.od.test"}}
		return b
	})
	if !m.Ready() {
		t.Error("Ready() = false with nothing to manage eagerly")
	}
	for _, name := range []string{"a.od.test", "asked.test"} {
		start := time.Now()
		checkVerified(t, rig.tlsAddr, name, rig.pebble)
		t.Logf("on-demand issuance for %s took %v (within the handshake)", name, time.Since(start))
		if n := rig.pebble.OrdersFor(name); n != 1 {
			t.Errorf("Pebble saw %d orders for %s, want 1", n, name)
		}
	}
	for _, name := range []string{"evil.test", "b.a.od.test", "od.test"} {
		if c, err := dial(t, rig.tlsAddr, name, trustPebble(rig.pebble)); err == nil {
			c.Close()
			t.Errorf("handshake for refused %s succeeded", name)
		}
		if n := rig.pebble.OrdersFor(name); n != 0 {
			t.Errorf("Pebble saw %d orders for refused %s", n, name)
		}
	}
	if asked.Load() != "od.test" {
		t.Errorf("ask URL last saw %v, want od.test", asked.Load())
	}
	if !logs.contains("on-demand certificate refused") || !logs.contains("evil.test") {
		t.Error("refusal not logged")
	}
	exp := m.Expiry()
	if exp["a.od.test"].IsZero() || exp["asked.test"].IsZero() || len(exp) != 2 {
		t.Errorf("Expiry() = %v", exp)
	}
}

func TestACMEFailureLogged(t *testing.T) {
	leakCheck(t)
	storage := t.TempDir()
	// The VA's HTTP port answers 404 to everything instead of HTTPHandler: validation fails.
	wrongHTTP := listen(t)
	hs := &http.Server{Handler: http.NotFoundHandler()}
	go hs.Serve(wrongHTTP)
	defer hs.Close()
	p := pebbletest.Start(t, port(wrongHTTP), 1)
	log, logs := newTestLog(t)
	m, err := New(context.Background(), acmeBlock(p, storage, "http-01"), Options{
		Logger: log, AltHTTPPort: port(wrongHTTP), DNSResolver: p.DNSAddr,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "failure logged", func() bool { return logs.contains("obtaining certificate failed") })
	if !logs.contains("urn:ietf:params:acme:error:") {
		t.Error("the CA's problem type is not in the log")
	}
	if m.Ready() {
		t.Error("Ready() after a failed issuance")
	}
	m.Close()
}
