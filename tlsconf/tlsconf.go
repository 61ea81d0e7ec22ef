// Package tlsconf turns a listener's tls block (config.TLS) into a *tls.Config: certificate
// files loaded from disk and watched for changes, or certificates obtained and renewed by
// certmagic over ACME (eagerly for the listed domains, on demand for names the on_demand
// policy approves).
//
// The gateway creates one Manager per TLS listener, serves TLSConfig() on it, serves
// HTTPHandler() on the tls block's http_address (if any), calls Reload on SIGHUP and Close
// when the listener goes away.
package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/wsgate/wsgate/config"
)

// ErrRecreate is returned (wrapped) by Reload for a change that cannot be applied to a
// running Manager (files <-> acme, min_version, curves, CA, account, storage, challenges,
// on_demand on/off): the Manager keeps its old settings; build a new Manager to apply it. The
// gateway does so when the error's RecreateNeeded method reports true.
var ErrRecreate error = recreateError{}

type recreateError struct{}

func (recreateError) Error() string {
	return "tlsconf: change cannot be applied in place; create a new Manager"
}

// RecreateNeeded reports true: the change needs a new Manager (see gateway.TLSProvider).
func (recreateError) RecreateNeeded() bool { return true }

// Options are knobs tests and the gateway set; the zero value is production.
type Options struct {
	// Logger receives the package's and certmagic's log lines. Default slog.Default().
	Logger *slog.Logger
	// AltHTTPPort and AltTLSALPNPort are the ports ACME validation reaches (tests);
	// 0 means 80 and 443. Whatever listens there must serve HTTPHandler() and TLSConfig().
	AltHTTPPort, AltTLSALPNPort int
	// DNSResolver is a "host:port" resolver certmagic uses for its own DNS lookups (the
	// ACME directory's host); "" means the system resolver.
	DNSResolver string
}

// Manager owns the certificates of one TLS listener.
type Manager struct {
	log       *slog.Logger
	opts      Options
	tlsConfig *tls.Config

	mu  sync.Mutex  // serializes Reload and the file watcher
	cur *config.TLS // settings in effect

	files *fileCerts // files mode
	acme  *acmeCerts // acme mode

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New builds the Manager for t. With certificate files it loads them now and fails on an
// unreadable file or a certificate that does not match its key. With ACME it starts
// managing in the background and returns at once: until the first certificates arrive,
// Ready is false and handshakes for those names fail. ctx bounds only what New itself
// does; management runs until Close.
func New(ctx context.Context, t *config.TLS, opts Options) (*Manager, error) {
	if t == nil {
		return nil, errors.New("tlsconf: no tls block")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	minVer, err := parseMinVersion(t.MinVersion)
	if err != nil {
		return nil, err
	}
	curves, err := parseCurves(t.Curves)
	if err != nil {
		return nil, err
	}
	useACME := t.ACME != nil || t.OnDemand != nil
	switch {
	case useACME && len(t.Certificates) > 0:
		return nil, errors.New("tlsconf: acme and certificate files are exclusive in one tls block")
	case !useACME && len(t.Certificates) == 0:
		return nil, errors.New("tlsconf: tls block has neither certificate files nor acme")
	}

	m := &Manager{log: opts.Logger, opts: opts, cur: t}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.tlsConfig = &tls.Config{
		MinVersion:       minVer,
		CurvePreferences: curves,
		// HTTP/1.1 only: the WebSocket handshake needs it (RFC 8441 over h2 is not supported).
		NextProtos: []string{"http/1.1"},
		// Session tickets stay on (SessionTicketsDisabled false); Go rotates the keys daily.
	}

	if useACME {
		a, err := newACME(m, t)
		if err != nil {
			m.cancel()
			return nil, err
		}
		m.acme = a
		if a.tlsALPN {
			m.tlsConfig.NextProtos = append(m.tlsConfig.NextProtos, acmeTLS1)
		}
		m.tlsConfig.GetCertificate = a.getCertificate
		if err := a.start(); err != nil {
			m.Close()
			return nil, err
		}
		return m, nil
	}

	set, err := loadCertSet(t.Certificates)
	if err != nil {
		m.cancel()
		return nil, err
	}
	m.files = &fileCerts{}
	m.files.set.Store(set)
	m.tlsConfig.GetCertificate = m.files.getCertificate
	m.logLoaded(set)
	m.wg.Add(1)
	go m.watchFiles()
	return m, nil
}

// TLSConfig is the listener's configuration: MinVersion from min_version (default TLS 1.2),
// ALPN "http/1.1" (plus "acme-tls/1" when the TLS-ALPN-01 challenge is enabled; never
// "h2"), session tickets on, certificate chosen by SNI. The same *tls.Config is returned on
// every call and must not be modified. A connection that negotiates "acme-tls/1" is a CA
// validating a challenge: the gateway should close it after the handshake. Do not hand it to
// net/http's ServeTLS, which would add "h2".
func (m *Manager) TLSConfig() *tls.Config { return m.tlsConfig }

// HTTPHandler serves the http_address listener: ACME HTTP-01 challenges when that challenge
// is enabled, and a 308 redirect to https://HOST/path?query for every other request (HOST
// without the port, so the redirect targets 443).
func (m *Manager) HTTPHandler() http.Handler {
	redirect := http.HandlerFunc(redirectToHTTPS)
	if m.acme != nil && m.acme.http01 {
		return m.acme.issuer.HTTPChallengeHandler(redirect)
	}
	return redirect
}

func redirectToHTTPS(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
		if ip := net.ParseIP(h); ip != nil && ip.To4() == nil {
			host = "[" + h + "]"
		}
	}
	if host == "" {
		http.Error(w, "missing Host header", http.StatusBadRequest)
		return
	}
	w.Header().Set("Connection", "close")
	http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
}

// Ready reports whether a certificate is available for every managed domain. With files it
// is always true once New succeeded; with on-demand only, there is nothing to wait for.
func (m *Manager) Ready() bool {
	if m.acme != nil {
		return m.acme.ready()
	}
	return true
}

// Reload applies t (SIGHUP): certificate files are re-read (the list may change), ACME
// domains may be added or removed and the on_demand policy replaced. On any error the
// Manager keeps its current certificates and settings. Existing TLS connections are never
// affected: only new handshakes see new certificates. See ErrRecreate for what cannot change.
func (m *Manager) Reload(t *config.TLS) error {
	if t == nil {
		return errors.New("tlsconf: no tls block")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return errors.New("tlsconf: reload after Close")
	}
	if v, err := parseMinVersion(t.MinVersion); err != nil {
		return err
	} else if v != m.tlsConfig.MinVersion {
		return fmt.Errorf("%w: min_version changed", ErrRecreate)
	}
	if c, err := parseCurves(t.Curves); err != nil {
		return err
	} else if !slices.Equal(c, m.tlsConfig.CurvePreferences) {
		return fmt.Errorf("%w: curves changed", ErrRecreate)
	}
	useACME := t.ACME != nil || t.OnDemand != nil
	if useACME != (m.acme != nil) {
		return fmt.Errorf("%w: switched between files and acme", ErrRecreate)
	}
	if useACME {
		if t.HTTPAddress != m.cur.HTTPAddress {
			// The HTTP-01 solver was built for the old address's port.
			return fmt.Errorf("%w: http_address changed", ErrRecreate)
		}
		if err := m.acme.reload(t); err != nil {
			return err
		}
		m.cur = t
		return nil
	}
	if len(t.Certificates) == 0 {
		return errors.New("tlsconf: tls block has no certificate files")
	}
	set, err := loadCertSet(t.Certificates)
	if err != nil {
		return err
	}
	m.files.set.Store(set)
	m.files.failed = nil
	m.cur = t
	m.logLoaded(set)
	return nil
}

// Expiry returns NotAfter per certificate name: for files, each entry's first DNS name (or
// its subject CN); for ACME, each managed or on-demand name that has a certificate.
func (m *Manager) Expiry() map[string]time.Time {
	if m.acme != nil {
		return m.acme.expiry()
	}
	out := make(map[string]time.Time)
	for _, e := range m.files.set.Load().entries {
		if _, dup := out[e.name]; !dup {
			out[e.name] = e.cert.Leaf.NotAfter
		}
	}
	return out
}

// Close stops the file watcher or certmagic's maintenance and any issuance in progress. It
// is idempotent. Certificates already loaded keep serving handshakes on TLSConfig().
func (m *Manager) Close() error {
	m.once.Do(func() {
		m.cancel()
		m.wg.Wait()
		if m.acme != nil {
			m.acme.stop()
		}
	})
	return nil
}

// curveIDs maps the names of config.TLSCurves to Go's identifiers.
var curveIDs = map[string]tls.CurveID{
	"x25519mlkem768": tls.X25519MLKEM768,
	"x25519":         tls.X25519,
	"secp256r1":      tls.CurveP256,
	"secp384r1":      tls.CurveP384,
	"secp521r1":      tls.CurveP521,
}

// parseCurves turns curves names into CurvePreferences; nil keeps Go's default.
func parseCurves(names []string) ([]tls.CurveID, error) {
	if len(names) == 0 {
		return nil, nil
	}
	ids := make([]tls.CurveID, 0, len(names))
	for _, n := range names {
		id, ok := curveIDs[n]
		if !ok {
			return nil, fmt.Errorf("tlsconf: unknown curve %q", n)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func parseMinVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tlsconf: min_version %q: want \"1.2\" or \"1.3\"", s)
}
