package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

func servedSerial(t *testing.T, addr, sni string, _ *testCA) *big.Int {
	t.Helper()
	c, err := dial(t, addr, sni, &tls.Config{InsecureSkipVerify: true}) // selection only; verification is tested separately
	if err != nil {
		t.Fatalf("handshake with SNI %q: %v", sni, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

func TestFilesTLSConfig(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, sn1 := ca.leaf(t, dir, "one", "a.test", "www.a.test")
	c2, k2, sn2 := ca.leaf(t, dir, "two", "*.b.test")
	c3, k3, sn3 := ca.leaf(t, dir, "three", "exact.b.test")
	log, _ := newTestLog(t)

	m, err := New(context.Background(), &config.TLS{
		Certificates: []config.CertFiles{pair(c1, k1), pair(c2, k2), pair(c3, k3)},
		MinVersion:   "1.3",
	}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion = %x, want TLS 1.3", cfg.MinVersion)
	}
	if !slices.Equal(cfg.NextProtos, []string{"http/1.1"}) {
		t.Errorf("NextProtos = %q, want [http/1.1] (no h2, no acme-tls/1 with files)", cfg.NextProtos)
	}
	if cfg.SessionTicketsDisabled {
		t.Error("session tickets disabled")
	}
	if !m.Ready() {
		t.Error("Ready() = false with loaded files")
	}

	srv := serveEcho(t, listen(t), cfg)
	addr := srv.ln.Addr().String()
	for _, tc := range []struct {
		sni  string
		want *big.Int
	}{
		{"a.test", sn1},
		{"WWW.A.TEST.", sn1},
		{"x.b.test", sn2},     // wildcard
		{"exact.b.test", sn3}, // exact beats wildcard
		{"y.x.b.test", sn1},   // wildcard covers one label only: default
		{"other.test", sn1},   // no match: first entry
		{"", sn1},             // no SNI: first entry
	} {
		if got := servedSerial(t, addr, tc.sni, ca); got.Cmp(tc.want) != 0 {
			t.Errorf("SNI %q served serial %v, want %v", tc.sni, got, tc.want)
		}
	}

	// ALPN: a client offering h2 and http/1.1 gets http/1.1.
	c, err := dial(t, addr, "a.test", &tls.Config{RootCAs: ca.pool, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("negotiated %q, want http/1.1", p)
	}
	c.Close()
	// TLS 1.2 client against min_version 1.3: refused.
	if c, err := dial(t, addr, "a.test", &tls.Config{RootCAs: ca.pool, MaxVersion: tls.VersionTLS12}); err == nil {
		c.Close()
		t.Error("TLS 1.2 handshake succeeded with min_version 1.3")
	}

	exp := m.Expiry()
	if len(exp) != 3 || exp["a.test"].IsZero() || exp["*.b.test"].IsZero() || exp["exact.b.test"].IsZero() {
		t.Errorf("Expiry() = %v", exp)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFilesDefaults(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, _ := ca.leaf(t, dir, "one", "a.test")
	m, err := New(context.Background(), &config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if v := m.TLSConfig().MinVersion; v != tls.VersionTLS12 {
		t.Errorf("default MinVersion = %x, want TLS 1.2", v)
	}
}

func TestFilesErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, _ := ca.leaf(t, dir, "one", "a.test")
	_, k2, _ := ca.leaf(t, dir, "two", "b.test")
	garbage := filepath.Join(dir, "garbage.key")
	writeFile(t, garbage, []byte("not a key\n"))
	missing := filepath.Join(dir, "missing.key")

	for _, tc := range []struct {
		name string
		tls  config.TLS
		want []string
	}{
		{"unreadable key", config.TLS{Certificates: []config.CertFiles{pair(c1, missing)}},
			[]string{"key_file", "missing.key", "no such file"}},
		{"unreadable cert", config.TLS{Certificates: []config.CertFiles{pair(missing, k1)}},
			[]string{"cert_file", "missing.key"}},
		{"mismatched", config.TLS{Certificates: []config.CertFiles{pair(c1, k2)}},
			[]string{"one.crt", "two.key", "does not match"}},
		{"not a key", config.TLS{Certificates: []config.CertFiles{pair(c1, garbage)}},
			[]string{"garbage.key", "PEM"}},
		{"second entry bad", config.TLS{Certificates: []config.CertFiles{pair(c1, k1), pair(c1, k2)}},
			[]string{"does not match"}},
		{"min version", config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}, MinVersion: "1.1"},
			[]string{"min_version"}},
		{"empty", config.TLS{}, []string{"neither"}},
		{"both", config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}, ACME: &config.ACME{Domains: []string{"a.test"}}},
			[]string{"exclusive"}},
		{"bad challenge", config.TLS{ACME: &config.ACME{Domains: []string{"a.test"}, Challenges: []string{"dns-01"}}},
			[]string{"dns-01"}},
		{"missing ca_root", config.TLS{ACME: &config.ACME{Domains: []string{"a.test"}, CARoot: missing}},
			[]string{"ca_root"}},
		{"acme without names", config.TLS{ACME: &config.ACME{}}, []string{"domains or an on_demand"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(context.Background(), &tc.tls, Options{})
			if err == nil {
				m.Close()
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestFilesReloadOnChange(t *testing.T) {
	leakCheck(t)
	old := pollInterval
	pollInterval = 20 * time.Millisecond
	t.Cleanup(func() { pollInterval = old })

	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, sn1 := ca.leaf(t, dir, "gw", "gw.test")
	log, logs := newTestLog(t)
	m, err := New(context.Background(), &config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv := serveEcho(t, listen(t), m.TLSConfig())
	addr := srv.ln.Addr().String()

	conn, err := dial(t, addr, "gw.test", &tls.Config{RootCAs: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// Rewrite both files in place with a new certificate.
	tmp := t.TempDir()
	nc, nk, sn2 := ca.leaf(t, tmp, "gw", "gw.test")
	copyFile(t, nk, k1)
	copyFile(t, nc, c1)
	waitFor(t, 5*time.Second, "new certificate served", func() bool {
		return servedSerial(t, addr, "gw.test", ca).Cmp(sn2) == 0
	})
	if err := echo(conn, "still there"); err != nil {
		t.Fatalf("connection opened before the reload broke: %v", err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(sn1) != 0 {
		t.Fatalf("old connection's certificate changed")
	}
	if got := m.Expiry()["gw.test"]; !got.Equal(servedNotAfter(t, addr, ca)) {
		t.Errorf("Expiry %v does not follow the reload", got)
	}

	// A broken key: logged, previous certificate kept.
	writeFile(t, k1, []byte("garbage"))
	waitFor(t, 5*time.Second, "reload failure logged", func() bool {
		return logs.contains("cannot be loaded")
	})
	if got := servedSerial(t, addr, "gw.test", ca); got.Cmp(sn2) != 0 {
		t.Fatalf("served %v after a failed reload, want the previous %v", got, sn2)
	}
	// Fixed again: picked up.
	nc3, nk3, sn3 := ca.leaf(t, tmp, "gw3", "gw.test")
	copyFile(t, nc3, c1)
	copyFile(t, nk3, k1)
	waitFor(t, 5*time.Second, "fixed certificate served", func() bool {
		return servedSerial(t, addr, "gw.test", ca).Cmp(sn3) == 0
	})
}

func TestReload(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, sn1 := ca.leaf(t, dir, "one", "a.test")
	c2, k2, sn2 := ca.leaf(t, dir, "two", "b.test")
	m, err := New(context.Background(), &config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv := serveEcho(t, listen(t), m.TLSConfig())
	addr := srv.ln.Addr().String()

	// A new list: b.test first (new default), a.test second.
	if err := m.Reload(&config.TLS{Certificates: []config.CertFiles{pair(c2, k2), pair(c1, k1)}}); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, addr, "nomatch.test", ca); got.Cmp(sn2) != 0 {
		t.Errorf("default after reload = %v, want %v", got, sn2)
	}
	if got := servedSerial(t, addr, "a.test", ca); got.Cmp(sn1) != 0 {
		t.Errorf("a.test after reload = %v, want %v", got, sn1)
	}
	// Errors keep the current set.
	if err := m.Reload(&config.TLS{Certificates: []config.CertFiles{pair(c1, filepath.Join(dir, "nope.key"))}}); err == nil {
		t.Fatal("Reload with a missing key succeeded")
	}
	if got := servedSerial(t, addr, "nomatch.test", ca); got.Cmp(sn2) != 0 {
		t.Errorf("default after failed reload = %v, want %v", got, sn2)
	}
	err = m.Reload(&config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}, MinVersion: "1.3"})
	if !errors.Is(err, ErrRecreate) {
		t.Errorf("min_version change: %v, want ErrRecreate", err)
	}
	err = m.Reload(&config.TLS{ACME: &config.ACME{Domains: []string{"a.test"}}})
	if !errors.Is(err, ErrRecreate) {
		t.Errorf("files -> acme: %v, want ErrRecreate", err)
	}
	m.Close()
	if err := m.Reload(&config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}}); err == nil {
		t.Error("Reload after Close succeeded")
	}
}

func TestHTTPHandlerRedirect(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, _ := ca.leaf(t, dir, "one", "a.test")
	m, err := New(context.Background(), &config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h := m.HTTPHandler()
	for _, tc := range []struct{ host, target, want string }{
		{"gw.test", "/chat/room?x=1&y=a%20b", "https://gw.test/chat/room?x=1&y=a%20b"},
		{"gw.test:8080", "/", "https://gw.test/"},
		{"[::1]:80", "/p%2Fq?", "https://[::1]/p%2Fq?"},
		{"gw.test", "/.well-known/acme-challenge/tok", "https://gw.test/.well-known/acme-challenge/tok"},
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			r := httptest.NewRequest(method, "http://"+tc.host+tc.target, nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusPermanentRedirect || w.Header().Get("Location") != tc.want {
				t.Errorf("%s %s%s: %d %q, want 308 %q", method, tc.host, tc.target, w.Code, w.Header().Get("Location"), tc.want)
			}
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := readFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, b)
}

func servedNotAfter(t *testing.T, addr string, ca *testCA) time.Time {
	c, err := dial(t, addr, "gw.test", &tls.Config{RootCAs: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].NotAfter
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestCurves checks the curves setting: the server uses only the listed key exchanges (a
// default client gets P-256 after a HelloRetryRequest when only secp256r1 is allowed),
// refuses a client with none of them, keeps Go's default (X25519MLKEM768 first) without the
// setting, and a change of curves on reload needs a new Manager.
func TestCurves(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, _ := ca.leaf(t, dir, "one", "a.test")
	handshake := func(m *Manager, client *tls.Config) (tls.CurveID, error) {
		t.Helper()
		srv := serveEcho(t, listen(t), m.TLSConfig())
		client.RootCAs = ca.pool
		c, err := dial(t, srv.ln.Addr().String(), "a.test", client)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.ConnectionState().CurveID, nil
	}

	m, err := New(context.Background(), &config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}, Curves: []string{"secp256r1", "x25519"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if id, err := handshake(m, &tls.Config{}); err != nil || id != tls.X25519 {
		t.Errorf("default client against [secp256r1 x25519]: %v, %v; want X25519 (no ML-KEM)", id, err)
	}
	p, err := New(context.Background(), &config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}, Curves: []string{"secp256r1"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if id, err := handshake(p, &tls.Config{}); err != nil || id != tls.CurveP256 {
		t.Errorf("default client against [secp256r1]: %v, %v; want P-256 (after a HelloRetryRequest)", id, err)
	}
	if id, err := handshake(m, &tls.Config{CurvePreferences: []tls.CurveID{tls.X25519}}); err != nil || id != tls.X25519 {
		t.Errorf("x25519-only client: %v, %v; want X25519", id, err)
	}
	if _, err := handshake(m, &tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP384}}); err == nil {
		t.Error("P-384-only client accepted by [secp256r1 x25519]")
	}
	if err := m.Reload(&config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}, Curves: []string{"x25519"}}); !errors.Is(err, ErrRecreate) {
		t.Errorf("curves change: %v, want ErrRecreate", err)
	}
	if err := m.Reload(&config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}, Curves: []string{"secp256r1", "x25519"}}); err != nil {
		t.Errorf("reload with the same curves: %v", err)
	}

	d, err := New(context.Background(), &config.TLS{Certificates: []config.CertFiles{pair(c1, k1)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if id, err := handshake(d, &tls.Config{}); err != nil || id != tls.X25519MLKEM768 {
		t.Errorf("default server and client: %v, %v; want X25519MLKEM768", id, err)
	}
}
