package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/wsgate/wsgate/admin"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/gateway"
	"github.com/wsgate/wsgate/internal/echo"
	"github.com/wsgate/wsgate/internal/memtrim"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/tlsconf"
)

// configFromFlags parses `-config FILE` and loads the file. code is the exit code to return
// when cfg is nil: 2 for bad flags, 1 for an invalid configuration (diagnostics printed).
func configFromFlags(name string, args []string, stderr io.Writer) (cfg *config.Config, path string, code int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	p := fs.String("config", "config.hcl", "configuration file")
	if fs.Parse(args) != nil {
		return nil, "", 2
	}
	cfg, ok := loadConfig(*p, stderr)
	if !ok {
		return nil, *p, 1
	}
	return cfg, *p, 0
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	cfg, path, code := configFromFlags("validate", args, stderr)
	if cfg == nil {
		return code
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d routes)\n", path, len(cfg.Listeners), len(cfg.Routes))
	return 0
}

// loadConfig loads path and prints its diagnostics (warnings too) in HCL's format.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, diags := config.Load(path)
	writeDiagnostics(stderr, path, diags)
	return cfg, !diags.HasErrors()
}

func writeDiagnostics(w io.Writer, path string, diags hcl.Diagnostics) {
	if len(diags) > 0 {
		src, _ := os.ReadFile(path)
		config.WriteDiagnostics(w, path, src, diags)
	}
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	cfg, path, code := configFromFlags("run", args, stderr)
	if cfg == nil {
		return code
	}
	return serve(cfg, newLogger(cfg.Log, stdout), path, nil)
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9000", "listen address of the demo listener")
	if fs.Parse(args) != nil {
		return 2
	}
	backend, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "wsgate demo:", err)
		return 1
	}
	defer backend.Close()
	cfg := config.Default()
	cfg.Log.Format = "text"
	cfg.Listeners = []*config.Listener{{Name: "demo", Address: *addr}}
	cfg.Routes = []*config.Route{{
		Path:         "/echo",
		Backend:      &url.URL{Scheme: "ws", Host: backend.Addr(), Path: "/"},
		ForwardAuth:  true,
		ValidateUTF8: true,
		Limits:       cfg.Limits,
	}}
	return serve(cfg, newLogger(cfg.Log, stdout), "", func(g *gateway.Gateway) {
		a := g.Addr("demo").String()
		fmt.Fprintf(stdout, "wsgate demo: ws://%s/echo relays to a built-in echo backend at ws://%s/\n", a, backend.Addr())
		fmt.Fprintf(stdout, "  try: new WebSocket('ws://%s/echo') in a browser console, or any WebSocket client\n", a)
		fmt.Fprintln(stdout, "  Ctrl-C drains and exits.")
	})
}

// serve runs the gateway until SIGTERM/SIGINT: drain, then exit 0; a second signal during
// the drain exits at once with 1. With a config path, SIGHUP and the admin POST /reload
// re-read it. The admin listener (cfg.Admin) serves /metrics, /healthz, /readyz and /reload
// and stays up during the drain, so /readyz answers 503 meanwhile.
func serve(cfg *config.Config, log *slog.Logger, path string, started func(*gateway.Gateway)) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := metrics.New()
	g := gateway.New(cfg, gateway.Options{
		Logger:   log,
		Observer: m,
		TLS: func(l *config.Listener) (gateway.TLSProvider, error) {
			// ACME validation reaches the standard ports 80 and 443; when the listeners are
			// elsewhere (behind port forwarding), the solvers must answer on them.
			return tlsconf.New(ctx, l.TLS, tlsconf.Options{
				Logger:         log,
				AltTLSALPNPort: portOf(l.Address),
				AltHTTPPort:    portOf(l.TLS.HTTPAddress),
			})
		},
	})
	m.SetCertificateSource(g.CertExpiry)
	m.ConfigLoaded(cfg.Hash)
	// Give freed heap back to the OS when a burst of connections is over.
	waitTrim := memtrim.Start(ctx, memtrim.Options{OnTrim: func(released uint64, took time.Duration) {
		m.MemoryTrimmed(released)
		log.Debug("memory trimmed", "released_bytes", released, "took", took.String())
	}})
	defer func() {
		cancel()
		waitTrim()
	}()
	o := &ops{path: path, log: log, g: g, m: m}
	adminOpts := admin.Options{Metrics: m.Handler(), Ready: g.Ready, Logger: log}
	if path != "" {
		adminOpts.Reload = o.reload
	}
	o.admin = admin.New(adminOpts)
	// Take the signals before the listeners accept: a SIGTERM that arrives once clients can
	// connect must drain, not kill the process with its default action.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := g.Start(); err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	if cfg.Admin != nil {
		if err := o.admin.Listen(cfg.Admin.Address); err != nil {
			log.Error("start failed", "err", err)
			g.Close()
			return 1
		}
	}
	defer o.admin.Close()
	if started != nil {
		started(g)
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if path != "" {
				o.reload()
			}
			continue
		}
		log.Info("draining", "signal", sig.String(), "timeout", g.Config().DrainTimeout.String(), "connections", g.ActiveConnections())
		dctx, dcancel := context.WithTimeout(ctx, g.Config().DrainTimeout)
		done := make(chan error, 1)
		go func() { done <- g.Drain(dctx) }()
		for {
			select {
			case err := <-done:
				dcancel()
				if err != nil {
					log.Warn("drain ended", "err", err)
				}
				log.Info("stopped")
				return 0
			case sig := <-sigs:
				if sig == syscall.SIGHUP {
					log.Warn("reload ignored while draining")
					continue
				}
				log.Warn("second signal, exiting now", "signal", sig.String(), "connections", g.ActiveConnections())
				dcancel()
				return 1
			}
		}
	}
	return 0
}

// ops reloads the configuration for SIGHUP and POST /reload.
type ops struct {
	path  string
	log   *slog.Logger
	g     *gateway.Gateway
	m     *metrics.Metrics
	admin *admin.Server

	mu sync.Mutex // one reload at a time
}

// reload re-reads the configuration file. An invalid file leaves everything as it was and
// logs the HCL diagnostics (an *admin.InvalidConfigError); a valid one is used by new
// handshakes at once while open connections keep their settings; the admin listener moves,
// starts or stops with the admin block.
func (o *ops) reload() (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	cfg, diags := config.Load(o.path)
	var text bytes.Buffer
	writeDiagnostics(&text, o.path, diags)
	if diags.HasErrors() {
		var at []string
		for _, d := range diags.Errs() {
			if de, ok := d.(*hcl.Diagnostic); ok && de.Subject != nil {
				at = append(at, de.Subject.String()+": "+de.Summary)
			} else {
				at = append(at, d.Error())
			}
		}
		o.log.Error("reload failed: invalid configuration, keeping the old one", "file", o.path, "errors", at, "diagnostics", text.String())
		o.m.Reloaded("", false)
		return "", &admin.InvalidConfigError{Diagnostics: text.String()}
	}
	if len(diags) > 0 {
		o.log.Warn("configuration warnings", "file", o.path, "diagnostics", text.String())
	}
	if err := o.g.Reload(cfg); err != nil {
		o.log.Error("reload failed, keeping the old configuration", "file", o.path, "err", err)
		o.m.Reloaded("", false)
		return "", err
	}
	o.m.Reloaded(cfg.Hash, true)
	o.log.Info("configuration reloaded", "file", o.path, "hash", cfg.Hash)
	if cfg.Admin == nil {
		o.admin.Stop()
	} else if err := o.admin.Listen(cfg.Admin.Address); err != nil {
		// The gateway runs the new configuration; only the admin endpoints stayed put.
		o.log.Error("admin listener not moved", "address", cfg.Admin.Address, "err", err)
	}
	return cfg.Hash, nil
}

// portOf returns the port of a listen address, or 0.
func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// newLogger builds the slog logger of the log block: JSON unless the format says text or, with
// no format, stdout is a terminal.
func newLogger(lc config.Log, stdout io.Writer) *slog.Logger {
	var level slog.Level
	if lc.Level != "" {
		level.UnmarshalText([]byte(lc.Level))
	}
	opts := &slog.HandlerOptions{Level: level}
	format := lc.Format
	if format == "" {
		format = "json"
		if f, ok := stdout.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(stdout, opts))
	}
	return slog.New(slog.NewJSONHandler(stdout, opts))
}
