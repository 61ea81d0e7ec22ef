// Package admin serves wsgate's operations endpoints on the admin listener, never on a public
// one:
//
//	GET  /metrics  Prometheus exposition (the metrics package's registry)
//	GET  /healthz  200 while the process runs
//	GET  /readyz   200 when listeners are bound, certificates available and not draining; else 503
//	POST /reload   re-read the configuration: 200, or 400 with HCL diagnostics when it is invalid
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"
)

// InvalidConfigError is a reload refused because the configuration file has errors; the
// old configuration stays. POST /reload answers 400 with Diagnostics as the body.
type InvalidConfigError struct {
	// Diagnostics is the HCL diagnostics text, with file:line and source snippets.
	Diagnostics string
}

func (e *InvalidConfigError) Error() string {
	return "invalid configuration, keeping the old one:\n" + e.Diagnostics
}

// Options configure a Server.
type Options struct {
	// Metrics serves /metrics; nil answers 404.
	Metrics http.Handler
	// Ready backs /readyz; nil means always ready.
	Ready func() bool
	// Reload backs POST /reload and returns the new configuration's hash; nil answers 404.
	// An *InvalidConfigError answers 400, any other error 500.
	Reload func() (hash string, err error)
	Logger *slog.Logger
}

// Server is the admin HTTP server. It can move to another address while running.
type Server struct {
	opts    Options
	log     *slog.Logger
	handler http.Handler

	mu   sync.Mutex
	srv  *http.Server
	ln   net.Listener
	addr string         // the configured address of ln
	wg   sync.WaitGroup // Serve loops and the shutdowns of replaced servers
}

// New returns a server for opts; Listen binds it.
func New(opts Options) *Server {
	s := &Server{opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.handler = s.routes()
	return s
}

// Handler returns the admin endpoints as one handler.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	if s.opts.Metrics != nil {
		mux.Handle("GET /metrics", s.opts.Metrics)
	}
	// Go's profiler, for the performance notes (bench/README.md); the admin listener is
	// private, as its doc says.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Ready != nil && !s.opts.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	if s.opts.Reload != nil {
		mux.HandleFunc("POST /reload", s.reload)
	}
	return mux
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	hash, err := s.opts.Reload()
	var ice *InvalidConfigError
	switch {
	case errors.As(err, &ice):
		http.Error(w, ice.Diagnostics, http.StatusBadRequest)
	case err != nil:
		http.Error(w, "reload failed: "+err.Error(), http.StatusInternalServerError)
	default:
		fmt.Fprintf(w, "reloaded, hash %s\n", hash)
	}
}

// Listen serves on addr. If the server already listens on another address, the new one is
// bound first and the old one then shut down gracefully (requests in flight, such as the
// POST /reload that moved it, finish). The same address again is a no-op.
func (s *Server) Listen(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil && s.addr == addr {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.shutdownLocked()
	s.srv, s.ln, s.addr = srv, ln, addr
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		srv.Serve(ln)
	}()
	s.log.Info("admin listening", "address", ln.Addr().String())
	return nil
}

// shutdownLocked stops the current server gracefully in the background (at most 5 s).
func (s *Server) shutdownLocked() {
	if s.srv == nil {
		return
	}
	old := s.srv
	s.srv, s.ln, s.addr = nil, nil, ""
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if old.Shutdown(ctx) != nil {
			old.Close()
		}
	}()
}

// Addr returns the bound address, or nil when not listening.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Stop stops listening (requests in flight finish) without waiting.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdownLocked()
}

// Close stops listening and waits until every request in flight has finished (at most 5 s).
func (s *Server) Close() error {
	s.Stop()
	s.wg.Wait()
	return nil
}
