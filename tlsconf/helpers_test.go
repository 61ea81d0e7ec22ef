package tlsconf

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/config"

	"github.com/wsgate/wsgate/internal/pebbletest"
)

// testLog is an slog.Logger writing to t.Log (until the test ends; later lines are dropped,
// since certmagic goroutines may still log) and keeping every line for assertions.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
	buf  bytes.Buffer
}

func newTestLog(t testing.TB) (*slog.Logger, *testLog) {
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), w
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLog) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.buf.Bytes(), []byte(s))
}

// leakCheck registers (first, so it runs last) a goroutine leak check. Ignored, each by
// design of a dependency and not stoppable from outside:
//   - pebbletest.GoleakIgnores: Pebble's VA task loop (no shutdown API).
//   - certmagic.(*RingBufferRateLimiter).loop: certmagic keeps one rate limiter per CA
//     directory + account email in a package-level map and never stops it ("TODO: stop rate
//     limiter when it is garbage-collected" in acmeclient.go); it is process-global, created
//     once per CA+email, not per Manager.
//
// Other goroutines are given up to 15s to end: certmagic's lock-file refresher polls every
// 5s before it notices its lock was released.
func leakCheck(t *testing.T) {
	opts := append(pebbletest.GoleakIgnores(),
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
	)
	t.Cleanup(func() {
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := goleak.Find(opts...)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutine leak after Close: %v", err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// testCA signs leaf certificates for file tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tlsconf test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool}
}

var serial = big.NewInt(100)
var serialMu sync.Mutex

// leaf writes a certificate for names (and its key) to dir/base.{crt,key}; it returns the
// paths and the certificate's serial.
func (ca *testCA) leaf(t testing.TB, dir, base string, names ...string) (certFile, keyFile string, sn *big.Int) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serialMu.Lock()
	serial.Add(serial, big.NewInt(1))
	sn = new(big.Int).Set(serial)
	serialMu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Duration(sn.Int64()) * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile = filepath.Join(dir, base+".crt")
	keyFile = filepath.Join(dir, base+".key")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile, sn
}

// writeFile writes and bumps the mtime, so a rewrite within one timestamp tick is still seen.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	var mt time.Time
	if fi, err := os.Stat(path); err == nil {
		mt = fi.ModTime()
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err == nil && !fi.ModTime().After(mt) {
		later := mt.Add(time.Second)
		_ = os.Chtimes(path, later, later)
	}
}

// echoServer accepts TLS connections with cfg and echoes lines. Connections that negotiate
// acme-tls/1 (a CA validating TLS-ALPN-01) are counted and closed after the handshake, as
// the gateway will do.
type echoServer struct {
	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	alpnSeen int
}

func serveEcho(t testing.TB, ln net.Listener, cfg *tls.Config) *echoServer {
	s := &echoServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(90 * time.Second))
				if tc.Handshake() != nil {
					return
				}
				if tc.ConnectionState().NegotiatedProtocol == acmeTLS1 {
					s.mu.Lock()
					s.alpnSeen++
					s.mu.Unlock()
					return
				}
				_ = tc.SetDeadline(time.Time{})
				_, _ = io.Copy(tc, tc)
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *echoServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *echoServer) acmeTLSHandshakes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alpnSeen
}

// dial handshakes with serverName ("" sends no SNI) and checks one echo round trip.
func dial(t testing.TB, addr, serverName string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	cfg = cfg.Clone()
	cfg.ServerName = serverName
	if cfg.NextProtos == nil {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := echo(c, "ping"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func listen(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func pair(certFile, keyFile string) config.CertFiles {
	return config.CertFiles{CertFile: certFile, KeyFile: keyFile}
}
