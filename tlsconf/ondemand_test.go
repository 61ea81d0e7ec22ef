package tlsconf

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/config"
	"go.uber.org/zap"
)

func TestMatchAllow(t *testing.T) {
	allow := []string{"*.example.com", "exact.test", "API.Mixed.Test."}
	for name, want := range map[string]bool{
		"a.example.com":   true,
		"example.com":     false,
		"a.b.example.com": false,
		".example.com":    false,
		"exact.test":      true,
		"x.exact.test":    false,
		"api.mixed.test":  true,
		"evil.test":       false,
		"aexample.com":    false,
	} {
		if got := matchAllow(allow, name); got != want {
			t.Errorf("matchAllow(%q) = %v, want %v", name, got, want)
		}
	}
}

// newOnDemandOnly builds a Manager that never contacts its CA unless a handshake asks.
func newOnDemandOnly(t *testing.T, od *config.OnDemand, domains ...string) (*Manager, *testLog) {
	t.Helper()
	log, logs := newTestLog(t)
	m, err := New(context.Background(), &config.TLS{
		ACME:     &config.ACME{Domains: domains, CA: "https://127.0.0.1:1/dir", Storage: t.TempDir()},
		OnDemand: od,
	}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, logs
}

func TestDecide(t *testing.T) {
	leakCheck(t)
	var got []string
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RawQuery)
		if r.URL.Query().Get("domain") != "yes.test" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer ask.Close()
	m, logs := newOnDemandOnly(t, &config.OnDemand{Ask: ask.URL + "/ask?k=v", Allow: []string{"*.ok.test"}})
	ctx := context.Background()
	for name, want := range map[string]bool{"a.ok.test": true, "yes.test": true, "no.test": false} {
		if err := m.acme.decide(ctx, name); (err == nil) != want {
			t.Errorf("decide(%q) = %v, want allowed=%v", name, err, want)
		}
	}
	if !logs.contains("name=no.test") {
		t.Error("refusal not logged")
	}
	for _, q := range got {
		if !strings.HasPrefix(q, "domain=") || !strings.Contains(q, "k=v") {
			t.Errorf("ask query %q", q)
		}
	}
	ask.Close()
	if err := m.acme.decide(ctx, "yes.test"); err == nil {
		t.Error("allowed with the ask URL down")
	}

	// Reload replaces the policy; other ACME changes need a new Manager.
	err := m.Reload(&config.TLS{
		ACME:     &config.ACME{CA: "https://127.0.0.1:1/dir", Storage: m.acme.settings.Storage},
		OnDemand: &config.OnDemand{Allow: []string{"only.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.acme.decide(ctx, "a.ok.test") == nil || m.acme.decide(ctx, "only.test") != nil {
		t.Error("reloaded policy not in effect")
	}
	err = m.Reload(&config.TLS{ACME: &config.ACME{CA: "https://other/dir"}, OnDemand: &config.OnDemand{}})
	if !errors.Is(err, ErrRecreate) {
		t.Errorf("CA change: %v, want ErrRecreate", err)
	}
	// The HTTP-01 solver is built for the http_address's port.
	err = m.Reload(&config.TLS{
		ACME:        &config.ACME{CA: "https://127.0.0.1:1/dir", Storage: m.acme.settings.Storage},
		OnDemand:    &config.OnDemand{Allow: []string{"only.test"}},
		HTTPAddress: "127.0.0.1:8080",
	})
	if !errors.Is(err, ErrRecreate) || !strings.Contains(err.Error(), "http_address") {
		t.Errorf("http_address change: %v, want ErrRecreate", err)
	}
	if !m.Ready() || len(m.Expiry()) != 0 {
		t.Errorf("on-demand only: Ready %v Expiry %v", m.Ready(), m.Expiry())
	}
}

func TestZapBridge(t *testing.T) {
	var buf bytes.Buffer
	zl := newZapLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	zl.Named("obtain").With(zap.String("ca", "x")).Error("could not get certificate",
		zap.String("identifier", "gw.test"), zap.Error(errors.New("HTTP 403 urn:ietf:params:acme:error:unauthorized")))
	zl.Debug("hidden")
	out := buf.String()
	for _, want := range []string{"level=ERROR", `msg="could not get certificate"`, "logger=obtain", "ca=x",
		"identifier=gw.test", `error="HTTP 403 urn:ietf:params:acme:error:unauthorized"`} {
		if !strings.Contains(out, want) {
			t.Errorf("bridged line %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Error("debug line passed an info handler")
	}
}
