// Package pebbletest runs an in-process Pebble ACME server for tests: the ACME API on an
// httptest TLS server, a DNS server that resolves every name to 127.0.0.1, and Pebble's VA
// validating HTTP-01 and TLS-ALPN-01 challenges against ports the caller chose (pre-bind
// listeners on 127.0.0.1:0 and pass their ports; nothing uses a fixed port).
//
// Typical use:
//
//	httpLn, httpPort := pebbletest.Listen(t)
//	tlsLn, tlsPort := pebbletest.Listen(t)
//	ps := pebbletest.Start(t, httpPort, tlsPort)
//	// serve tlsconf HTTPHandler() on httpLn and TLSConfig() on tlsLn
//	// ACME client: directory ps.DirectoryURL, trust ps.CARootPEMFile (or ps.APIRootPool()).
//	// TLS clients of the issued certificates: trust ps.RootPool().
//	// Chromium: for k, v := range ps.ChromiumFlags() { opts = append(opts, chromedp.Flag(k, v)) }
//
// Pebble's VA starts a goroutine that it never stops; leak checks should add
// GoleakIgnores() to their options.
package pebbletest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"go.uber.org/goleak"
)

// Server is a running Pebble. Its fields are set by Start and read-only afterwards.
type Server struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:PORT/dir.
	DirectoryURL string
	// CARootPEMFile holds the PEM certificate of the ACME API's TLS server: the file to give
	// an ACME client as its trusted root (wsgate's acme ca_root).
	CARootPEMFile string
	// RootPEMFile holds the PEM of Pebble's issuing root: trust it to verify issued certificates.
	RootPEMFile string
	// DNSAddr is "127.0.0.1:PORT" (UDP and TCP); every A query answers 127.0.0.1.
	DNSAddr string
	// HTTPPort and TLSPort are where the VA connects for HTTP-01 and TLS-ALPN-01.
	HTTPPort, TLSPort int

	ca  *ca.CAImpl
	srv *httptest.Server
	dns *dnsServer
	out *testWriter

	mu       sync.Mutex
	orders   [][]string
	requests int

	closeOnce sync.Once
}

// envMu serializes the environment changes around Pebble's constructors, which read their
// knobs from the environment once.
var envMu sync.Mutex

// pebbleEnv are the knobs set while constructing Pebble: no random VA sleeps, no injected
// bad nonces, and a fresh authorization for every order (so each test really validates).
// PEBBLE_VA_ALWAYS_VALID is explicitly unset: validation must be real.
var pebbleEnv = map[string]string{
	"PEBBLE_VA_NOSLEEP":      "1",
	"PEBBLE_WFE_NONCEREJECT": "0",
	"PEBBLE_AUTHZREUSE":      "0",
	"PEBBLE_VA_ALWAYS_VALID": "",
}

// Start runs Pebble until the test ends (t.Cleanup), validating HTTP-01 on httpPort and
// TLS-ALPN-01 on tlsPort of whatever address the name resolves to, which is always 127.0.0.1.
func Start(t testing.TB, httpPort, tlsPort int) *Server {
	t.Helper()
	s := &Server{HTTPPort: httpPort, TLSPort: tlsPort, out: &testWriter{t: t}}
	logger := log.New(s.out, "pebble ", log.Lmicroseconds)

	d, err := startDNS()
	if err != nil {
		t.Fatal(err)
	}
	s.dns = d
	s.DNSAddr = d.addr
	t.Cleanup(s.Close)

	envMu.Lock()
	restore := setEnv(pebbleEnv)
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{"default": {Description: "pebbletest default profile"}}
	// ECDSA keys: generating Pebble's root and intermediate is instant, unlike RSA.
	s.ca = ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	v := va.New(logger, httpPort, tlsPort, false, d.addr, store)
	w := wfe.New(logger, store, v, s.ca, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	restore()
	envMu.Unlock()

	s.srv = httptest.NewUnstartedServer(s.record(w.Handler()))
	s.srv.Config.ErrorLog = logger
	s.srv.StartTLS()
	s.DirectoryURL = s.srv.URL + wfe.DirectoryPath

	dir := t.TempDir()
	s.CARootPEMFile = filepath.Join(dir, "acme-api-root.pem")
	s.RootPEMFile = filepath.Join(dir, "pebble-root.pem")
	if err := writePEM(s.CARootPEMFile, s.srv.Certificate().Raw); err != nil {
		t.Fatal(err)
	}
	if err := writePEM(s.RootPEMFile, s.RootCert().Raw); err != nil {
		t.Fatal(err)
	}
	return s
}

// Close stops the ACME API and the DNS server. It is idempotent and registered with
// t.Cleanup; call it early to prove a client no longer needs the CA.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.srv != nil {
			s.srv.Close()
		}
		if s.dns != nil {
			s.dns.close()
		}
		s.out.stop()
	})
}

// RootCert is Pebble's issuing root (chain 0).
func (s *Server) RootCert() *x509.Certificate { return s.ca.GetRootCert(0).Cert }

// IntermediateCert is the intermediate that signs every leaf.
func (s *Server) IntermediateCert() *x509.Certificate { return s.ca.GetIntermediateCert(0).Cert }

// RootPool trusts Pebble's root only: the pool to verify issued certificates with.
func (s *Server) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.RootCert())
	return p
}

// APIRootPool trusts the ACME API server's certificate only.
func (s *Server) APIRootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.srv.Certificate())
	return p
}

// IntermediateSPKIHash is base64(SHA-256(SubjectPublicKeyInfo)) of the issuing
// intermediate, the form Chromium's --ignore-certificate-errors-spki-list takes. Every
// certificate this Pebble issues chains to that key.
func (s *Server) IntermediateSPKIHash() string {
	sum := sha256.Sum256(s.IntermediateCert().RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// ChromiumFlags are command-line switches (without "--") that make Chromium trust this
// Pebble's certificates and resolve every host name to 127.0.0.1. With chromedp:
// for k, v := range flags { opts = append(opts, chromedp.Flag(k, v)) }. Chromium honours
// the SPKI list only together with --user-data-dir, which chromedp's allocator always sets.
func (s *Server) ChromiumFlags() map[string]any {
	return map[string]any{
		"ignore-certificate-errors-spki-list": s.IntermediateSPKIHash(),
		"host-resolver-rules":                 "MAP * 127.0.0.1",
	}
}

// Orders returns the identifiers of every new-order request seen so far, in arrival order.
func (s *Server) Orders() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]string, len(s.orders))
	copy(out, s.orders)
	return out
}

// OrdersFor counts new-order requests that included name.
func (s *Server) OrdersFor(name string) int {
	n := 0
	for _, o := range s.Orders() {
		for _, id := range o {
			if id == name {
				n++
			}
		}
	}
	return n
}

// Requests counts every HTTP request the ACME API received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// GoleakIgnores lists the goroutines a Pebble leaves behind by design, for goleak.
// va.New starts processTasks, which ranges over an unexported channel nothing ever closes;
// Pebble has no shutdown API, so one such goroutine per Start outlives the test.
func GoleakIgnores() []goleak.Option {
	return []goleak.Option{goleak.IgnoreAnyFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks")}
}

// newOrderPath is Pebble's new-order endpoint (wfe.newOrderPath, unexported).
const newOrderPath = "/order-plz"

// record counts requests and remembers the identifiers of new orders, read from the JWS
// payload (base64url JSON, not encrypted).
func (s *Server) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ids []string
		isOrder := r.Method == http.MethodPost && r.URL.Path == newOrderPath
		if isOrder {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			ids = orderIdentifiers(body)
		}
		s.mu.Lock()
		s.requests++
		if isOrder {
			s.orders = append(s.orders, ids)
		}
		s.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func orderIdentifiers(jws []byte) []string {
	var env struct {
		Payload string `json:"payload"`
	}
	if json.Unmarshal(jws, &env) != nil {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil
	}
	var order struct {
		Identifiers []struct{ Value string } `json:"identifiers"`
	}
	if json.Unmarshal(raw, &order) != nil {
		return nil
	}
	ids := make([]string, 0, len(order.Identifiers))
	for _, id := range order.Identifiers {
		ids = append(ids, id.Value)
	}
	return ids
}

func setEnv(kv map[string]string) (restore func()) {
	type old struct {
		v  string
		ok bool
	}
	saved := make(map[string]old, len(kv))
	for k, v := range kv {
		ov, ok := os.LookupEnv(k)
		saved[k] = old{ov, ok}
		if v == "" {
			os.Unsetenv(k)
		} else {
			os.Setenv(k, v)
		}
	}
	return func() {
		for k, o := range saved {
			if o.ok {
				os.Setenv(k, o.v)
			} else {
				os.Unsetenv(k)
			}
		}
	}
}

func writePEM(path string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// testWriter sends Pebble's log lines to t.Log until the server is closed; Pebble's
// goroutines may log after that, when t.Log would panic, so later lines are dropped.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// Listen binds 127.0.0.1:0 for a challenge port (closed at test end) and returns its port,
// to pass to Start before anything serves it.
func Listen(t testing.TB) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).Port
}
