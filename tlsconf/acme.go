package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/wsgate/wsgate/config"
)

const acmeTLS1 = "acme-tls/1" // RFC 8737 ALPN protocol of the TLS-ALPN-01 challenge

// askTimeout bounds one GET to the on_demand ask URL (a TLS handshake waits for it).
const askTimeout = 10 * time.Second

// acmeCerts manages certificates with certmagic. Two certmagic Configs share one cache and
// one storage: eager manages the listed domains (obtained at start, renewed in the
// background); onDemand (nil without on_demand) serves handshakes and obtains certificates
// for other names its DecisionFunc approves. Two are needed because certmagic only defers
// (never starts) the management of names given to a Config that has OnDemand set.
type acmeCerts struct {
	m        *Manager
	settings config.ACME // as given to New; changes need ErrRecreate
	http01   bool
	tlsALPN  bool

	cache    *certmagic.Cache
	eager    *certmagic.Config
	onDemand *certmagic.Config
	issuer   *certmagic.ACMEIssuer // eager's; serves HTTP-01 for both configs

	domains atomic.Pointer[[]string] // normalized
	policy  atomic.Pointer[config.OnDemand]
	ask     *http.Client

	mu    sync.Mutex
	names map[string]struct{} // names seen with a certificate or approved on demand
}

func newACME(m *Manager, t *config.TLS) (*acmeCerts, error) {
	var settings config.ACME
	if t.ACME != nil {
		settings = *t.ACME
	}
	a := &acmeCerts{
		m:        m,
		settings: settings,
		names:    make(map[string]struct{}),
		ask:      &http.Client{Timeout: askTimeout},
	}
	var err error
	if a.http01, a.tlsALPN, err = parseChallenges(settings.Challenges); err != nil {
		return nil, err
	}
	domains, err := normalizeDomains(settings.Domains)
	if err != nil {
		return nil, err
	}
	a.domains.Store(&domains)
	if t.OnDemand != nil {
		p := *t.OnDemand
		a.policy.Store(&p)
	} else if len(domains) == 0 {
		return nil, errors.New("tlsconf: acme needs domains or an on_demand block")
	}

	var roots *x509.CertPool
	if settings.CARoot != "" {
		pemBytes, err := os.ReadFile(settings.CARoot)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: reading acme ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("tlsconf: acme ca_root %s holds no PEM certificate", settings.CARoot)
		}
	}

	zl := newZapLogger(m.log)
	var storage certmagic.Storage // nil: certmagic's default directory
	if settings.Storage != "" {
		storage = &certmagic.FileStorage{Path: settings.Storage}
	}
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: a.configForCert,
		Logger:           zl,
	})
	newConfig := func(od *certmagic.OnDemandConfig) (*certmagic.Config, *certmagic.ACMEIssuer) {
		cfg := certmagic.New(a.cache, certmagic.Config{
			Storage:        storage,
			Logger:         zl,
			OnDemand:       od,
			OnEvent:        a.onEvent,
			ShouldEmitFunc: func(event string) bool { return event != "tls_get_certificate" },
		})
		if len(domains) > 0 {
			cfg.DefaultServerName = domains[0] // ClientHello without SNI
		}
		iss := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
			CA:                      settings.CA, // "" = Let's Encrypt production
			Email:                   settings.Email,
			Agreed:                  true,
			TrustedRoots:            roots,
			AltHTTPPort:             m.opts.AltHTTPPort,
			AltTLSALPNPort:          m.opts.AltTLSALPNPort,
			DisableHTTPChallenge:    !a.http01,
			DisableTLSALPNChallenge: !a.tlsALPN,
			Resolver:                m.opts.DNSResolver,
			Logger:                  zl,
		})
		cfg.Issuers = []certmagic.Issuer{iss}
		return cfg, iss
	}
	a.eager, a.issuer = newConfig(nil)
	if t.OnDemand != nil {
		a.onDemand, _ = newConfig(&certmagic.OnDemandConfig{DecisionFunc: a.decide})
	}
	return a, nil
}

// start begins managing the listed domains in the background.
func (a *acmeCerts) start() error {
	domains := *a.domains.Load()
	if len(domains) == 0 {
		return nil
	}
	a.m.log.Info("tls: managing acme certificates", "domains", domains,
		"ca", a.issuer.CA, "on_demand", a.onDemand != nil)
	if err := a.eager.ManageAsync(a.m.ctx, domains); err != nil {
		return fmt.Errorf("tlsconf: acme: %w", err)
	}
	return nil
}

func (a *acmeCerts) stop() { a.cache.Stop() }

// configForCert tells certmagic's maintenance which Config renews a cached certificate:
// eager for the listed domains (renewed in the background), onDemand for the rest (renewed
// during handshakes).
func (a *acmeCerts) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	if a.onDemand == nil {
		return a.eager, nil
	}
	domains := *a.domains.Load()
	for _, n := range c.Names {
		if slices.Contains(domains, strings.ToLower(n)) {
			return a.eager, nil
		}
	}
	return a.onDemand, nil
}

func (a *acmeCerts) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	// An on-demand issuance started by this handshake ends with the handshake or at Close.
	ctx, cancel := context.WithCancel(hello.Context())
	defer cancel()
	defer context.AfterFunc(a.m.ctx, cancel)()
	if a.onDemand != nil {
		return a.onDemand.GetCertificateWithContext(ctx, hello)
	}
	return a.eager.GetCertificateWithContext(ctx, hello)
}

// decide is the on-demand DecisionFunc: a name is allowed if it is a listed domain, matches
// an allow pattern, or the ask URL answers 200 to GET ask?domain=NAME. Anything else,
// including an unreachable ask URL, is refused and logged.
func (a *acmeCerts) decide(ctx context.Context, name string) error {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	reason := "matches no allow pattern"
	allowed := slices.Contains(*a.domains.Load(), name)
	p := a.policy.Load()
	if !allowed && p != nil {
		allowed = matchAllow(p.Allow, name)
		if !allowed && p.Ask != "" {
			var err error
			allowed, err = a.askURL(ctx, p.Ask, name)
			switch {
			case err != nil:
				reason = "ask: " + err.Error()
			case !allowed:
				reason = "ask URL did not answer 200"
			}
		}
	}
	if !allowed {
		a.m.log.Warn("tls: on-demand certificate refused", "name", name, "reason", reason)
		return fmt.Errorf("tlsconf: on-demand certificate for %q refused: %s", name, reason)
	}
	a.addName(name)
	return nil
}

// matchAllow: an exact name, or "*.example.com" matching exactly one label before it.
func matchAllow(patterns []string, name string) bool {
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSuffix(p, "."))
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			label, ok := strings.CutSuffix(name, "."+rest)
			if ok && label != "" && !strings.Contains(label, ".") {
				return true
			}
			continue
		}
		if p == name {
			return true
		}
	}
	return false
}

func (a *acmeCerts) askURL(ctx context.Context, ask, name string) (bool, error) {
	u, err := url.Parse(ask)
	if err != nil {
		return false, err
	}
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err
	}
	resp, err := a.ask.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode == http.StatusOK, nil
}

// onEvent records names that got certificates and logs failures with the CA's problem text
// (certmagic's own zap lines are bridged too, see zapslog.go).
func (a *acmeCerts) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cached_managed_cert":
		if sans, ok := data["sans"].([]string); ok {
			for _, n := range sans {
				a.addName(n)
			}
		}
	case "cert_obtained":
		if n, ok := data["identifier"].(string); ok {
			a.addName(n)
			a.m.log.Info("tls: certificate obtained", "name", n, "renewal", data["renewal"])
		}
	case "cert_failed":
		a.m.log.Error("tls: obtaining certificate failed; certmagic retries with backoff",
			"name", data["identifier"], "renewal", data["renewal"], "error", data["error"])
	}
	return nil
}

func (a *acmeCerts) addName(n string) {
	a.mu.Lock()
	a.names[strings.ToLower(n)] = struct{}{}
	a.mu.Unlock()
}

// best is the cached certificate for name with the latest NotAfter, if any is unexpired.
func (a *acmeCerts) best(name string) (time.Time, bool) {
	var latest time.Time
	for _, c := range a.cache.AllMatchingCertificates(name) {
		if c.Leaf != nil && !c.Expired() && c.Leaf.NotAfter.After(latest) {
			latest = c.Leaf.NotAfter
		}
	}
	return latest, !latest.IsZero()
}

func (a *acmeCerts) ready() bool {
	for _, d := range *a.domains.Load() {
		if _, ok := a.best(d); !ok {
			return false
		}
	}
	return true
}

func (a *acmeCerts) expiry() map[string]time.Time {
	a.mu.Lock()
	names := make([]string, 0, len(a.names))
	for n := range a.names {
		names = append(names, n)
	}
	a.mu.Unlock()
	for _, d := range *a.domains.Load() {
		if !slices.Contains(names, d) {
			names = append(names, d)
		}
	}
	out := make(map[string]time.Time)
	for _, n := range names {
		if t, ok := a.best(n); ok {
			out[n] = t
		}
	}
	return out
}

// reload applies new domains and a new on_demand policy; anything else needs ErrRecreate.
func (a *acmeCerts) reload(t *config.TLS) error {
	var s config.ACME
	if t.ACME != nil {
		s = *t.ACME
	}
	old := a.settings
	if s.CA != old.CA || s.Email != old.Email || s.CARoot != old.CARoot || s.Storage != old.Storage {
		return fmt.Errorf("%w: acme ca, email, ca_root or storage changed", ErrRecreate)
	}
	if h, alpn, err := parseChallenges(s.Challenges); err != nil {
		return err
	} else if h != a.http01 || alpn != a.tlsALPN {
		return fmt.Errorf("%w: acme challenges changed", ErrRecreate)
	}
	if (t.OnDemand != nil) != (a.onDemand != nil) {
		return fmt.Errorf("%w: on_demand switched on or off", ErrRecreate)
	}
	domains, err := normalizeDomains(s.Domains)
	if err != nil {
		return err
	}
	if t.OnDemand == nil && len(domains) == 0 {
		return errors.New("tlsconf: acme needs domains or an on_demand block")
	}
	oldDomains := *a.domains.Load()
	var added []string
	var removed []certmagic.SubjectIssuer
	for _, d := range domains {
		if !slices.Contains(oldDomains, d) {
			added = append(added, d)
		}
	}
	for _, d := range oldDomains {
		if !slices.Contains(domains, d) {
			removed = append(removed, certmagic.SubjectIssuer{Subject: d})
		}
	}
	a.domains.Store(&domains)
	if t.OnDemand != nil {
		p := *t.OnDemand
		a.policy.Store(&p)
	}
	a.settings.Domains = s.Domains
	if len(removed) > 0 && a.onDemand == nil {
		// Without on-demand nothing may serve a removed name any more.
		a.cache.RemoveManaged(removed)
	}
	if len(added) > 0 {
		a.m.log.Info("tls: managing added acme domains", "domains", added)
		if err := a.eager.ManageAsync(a.m.ctx, added); err != nil {
			return fmt.Errorf("tlsconf: acme: %w", err)
		}
	}
	return nil
}

func parseChallenges(list []string) (http01, tlsALPN bool, err error) {
	if len(list) == 0 {
		return true, true, nil
	}
	for _, c := range list {
		switch strings.ToLower(c) {
		case "http-01":
			http01 = true
		case "tls-alpn-01":
			tlsALPN = true
		default:
			return false, false, fmt.Errorf("tlsconf: acme challenge %q: want \"http-01\" or \"tls-alpn-01\"", c)
		}
	}
	return http01, tlsALPN, nil
}

func normalizeDomains(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, d := range in {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if d == "" || strings.ContainsAny(d, " /:") {
			return nil, fmt.Errorf("tlsconf: acme domain %q is not a host name", d)
		}
		if strings.HasPrefix(d, "*.") {
			return nil, fmt.Errorf("tlsconf: acme domain %q: wildcards need the dns-01 challenge, which wsgate does not support", d)
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}
