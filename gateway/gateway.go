// Package gateway owns wsgate's listeners, the client side of the WebSocket handshake,
// routing, the registry of live connections (for drain, reload and metrics), and shutdown.
// The relay itself lives in package proxy.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsframe"
)

// TLSProvider is the TLS side of one listener (package tlsconf implements it).
type TLSProvider interface {
	TLSConfig() *tls.Config
	// HTTPHandler serves the listener's http_address: ACME HTTP-01 and redirects to https.
	HTTPHandler() http.Handler
	// Ready reports whether certificates are available.
	Ready() bool
	// Reload re-reads certificate sources after a configuration reload. For a change it
	// cannot apply in place it returns an error with a RecreateNeeded() bool method that
	// reports true; the gateway then builds a new provider for the listener, which new
	// handshakes use, and closes the old one once handshakes begun on it are over.
	Reload(t *config.TLS) error
	// Expiry returns the NotAfter of the certificate served for each name (for metrics).
	Expiry() map[string]time.Time
	// Close stops the provider; it may be called more than once.
	Close() error
}

// needsRecreate reports whether a TLSProvider's Reload error asks for a new provider.
func needsRecreate(err error) bool {
	var r interface{ RecreateNeeded() bool }
	return errors.As(err, &r) && r.RecreateNeeded()
}

// Options configure a Gateway.
type Options struct {
	Logger *slog.Logger
	// TLS builds the TLS provider of a listener with a tls block; nil makes such listeners an
	// error.
	TLS func(l *config.Listener) (TLSProvider, error)
	// Observer receives events for metrics; nil means none.
	Observer Observer
}

// Gateway serves WebSocket clients on its listeners and relays them to backends.
type Gateway struct {
	opts Options
	log  *slog.Logger
	obs  Observer

	cfg    atomic.Pointer[config.Config]
	routes atomic.Pointer[router]
	guard  *guard

	mu        sync.Mutex
	listeners map[string]*listener
	conns     map[*clientConn]struct{}
	draining  bool
	idle      chan struct{} // closed when conns becomes empty while draining

	wg sync.WaitGroup // accept loops and connection goroutines
}

// New returns a gateway for cfg; Start binds its listeners.
func New(cfg *config.Config, opts Options) *Gateway {
	g := &Gateway{
		opts:      opts,
		log:       opts.Logger,
		obs:       opts.Observer,
		listeners: make(map[string]*listener),
		conns:     make(map[*clientConn]struct{}),
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if g.obs == nil {
		g.obs = nopObserver{}
	}
	g.guard = newGuard(g.log, g.obs)
	g.cfg.Store(cfg)
	g.routes.Store(newRouter(cfg.Routes, g.relayOptions))
	return g
}

// Start binds every listener of the configuration and starts serving.
func (g *Gateway) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, lc := range g.cfg.Load().Listeners {
		if err := g.bindLocked(lc); err != nil {
			g.closeListenersLocked()
			return err
		}
	}
	return nil
}

// Addr returns the bound address of the named listener (useful with port 0), or nil.
func (g *Gateway) Addr(name string) net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if l := g.listeners[name]; l != nil {
		return l.ln.Addr()
	}
	return nil
}

// Config returns the configuration new handshakes use.
func (g *Gateway) Config() *config.Config { return g.cfg.Load() }

// Ready reports whether every listener is bound with its certificates and the gateway is not
// draining (the admin /readyz).
func (g *Gateway) Ready() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining || len(g.listeners) == 0 {
		return false
	}
	for _, l := range g.listeners {
		if st := l.tls.Load(); st != nil && !st.p.Ready() {
			return false
		}
	}
	return true
}

// CertExpiry returns, per certificate name of every TLS listener, when its certificate
// expires (the earliest when several listeners serve a name). The metrics read it at scrape
// time.
func (g *Gateway) CertExpiry() map[string]time.Time {
	g.mu.Lock()
	var providers []TLSProvider
	for _, l := range g.listeners {
		if st := l.tls.Load(); st != nil {
			providers = append(providers, st.p)
		}
	}
	g.mu.Unlock()
	out := make(map[string]time.Time)
	for _, p := range providers {
		for name, t := range p.Expiry() {
			if old, ok := out[name]; !ok || t.Before(old) {
				out[name] = t
			}
		}
	}
	return out
}

// ActiveConnections returns how many client connections are open (in handshake or relaying).
func (g *Gateway) ActiveConnections() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Reload switches to cfg: new handshakes use its routes and limits at once, open connections
// keep the settings they started with, listeners whose address (or http_address) changed are
// rebound (the new one first, so a failed bind changes nothing), and removed listeners stop
// accepting. No open connection is touched.
func (g *Gateway) Reload(cfg *config.Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining {
		return errors.New("draining")
	}
	want := make(map[string]*config.Listener)
	for _, lc := range cfg.Listeners {
		want[lc.Name] = lc
	}
	// Bind what is new or moved before anything is closed, so a failed bind changes nothing.
	var fresh []*listener
	httpMoved := make(map[*listener]net.Listener) // kept listeners whose http_address moved
	undo := func() {
		for _, f := range fresh {
			f.close()
		}
		for _, ln := range httpMoved {
			if ln != nil {
				ln.Close()
			}
		}
	}
	for _, lc := range cfg.Listeners {
		old := g.listeners[lc.Name]
		if old != nil && old.cfg.Load().Address == lc.Address && (old.tls.Load() != nil) == (lc.TLS != nil) {
			if from, to := httpAddress(old.cfg.Load()), httpAddress(lc); from != to {
				var ln net.Listener
				if to != "" {
					var err error
					if ln, err = net.Listen("tcp", to); err != nil {
						undo()
						return fmt.Errorf("listener %q http_address: %w", lc.Name, err)
					}
				}
				httpMoved[old] = ln
			}
			continue
		}
		l, err := g.listen(lc)
		if err != nil {
			undo()
			return err
		}
		fresh = append(fresh, l)
	}
	for name, old := range g.listeners {
		lc := want[name]
		if lc == nil {
			old.close()
			delete(g.listeners, name)
			continue
		}
		if st := old.tls.Load(); st != nil && lc.TLS != nil {
			if err := st.p.Reload(lc.TLS); err != nil {
				g.reloadTLSFailed(old, lc, st, err, cfg.Limits.HandshakeTimeout)
			}
		}
		if ln, moved := httpMoved[old]; moved {
			g.moveHTTP(old, ln)
		}
		old.cfg.Store(lc)
	}
	for _, l := range fresh {
		if old := g.listeners[l.name]; old != nil {
			old.close()
		}
		g.listeners[l.name] = l
		g.serve(l)
	}
	g.cfg.Store(cfg)
	g.routes.Store(newRouter(cfg.Routes, g.relayOptions))
	return nil
}

// httpAddress is lc's http_address, or "" for none.
func httpAddress(lc *config.Listener) string {
	if lc.TLS == nil {
		return ""
	}
	return lc.TLS.HTTPAddress
}

// reloadTLSFailed handles a TLS provider that could not apply lc's tls block: when the
// change needs a new provider (min_version, curves, files <-> acme...), one is built and
// swapped in for new handshakes, and the old one is closed after grace (handshakes begun on
// it can finish); otherwise the old certificates stay. Called with g.mu held.
func (g *Gateway) reloadTLSFailed(l *listener, lc *config.Listener, old *tlsState, err error, grace time.Duration) {
	if !needsRecreate(err) {
		g.log.Error("certificate reload failed; keeping the old certificates", "listener", l.name, "err", err)
		return
	}
	p, perr := g.opts.TLS(lc)
	if perr != nil {
		g.log.Error("tls settings change failed; keeping the old settings", "listener", l.name, "change", err.Error(), "err", perr)
		return
	}
	l.tls.Store(&tlsState{p: p, cfg: p.TLSConfig()})
	l.retire(old.p, grace)
	g.log.Info("tls settings changed; new handshakes use them", "listener", l.name, "change", err.Error())
}

// Drain stops accepting, sends 1001 "going away" to both sides of every connection, and
// waits for them to finish until ctx is done; connections still open then are cut. It returns
// once every goroutine of the gateway has ended.
func (g *Gateway) Drain(ctx context.Context) error {
	g.mu.Lock()
	g.draining = true
	g.idle = make(chan struct{})
	g.closeListenersLocked()
	conns := make([]*clientConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	if len(g.conns) == 0 {
		close(g.idle)
	}
	idle := g.idle
	g.mu.Unlock()

	for _, c := range conns {
		c.shutdown()
	}
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = fmt.Errorf("drain timeout: %d connections cut", g.ActiveConnections())
		g.mu.Lock()
		for c := range g.conns {
			c.abort()
		}
		g.mu.Unlock()
	}
	g.wg.Wait()
	return err
}

// Close cuts every connection and listener at once.
func (g *Gateway) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.Drain(ctx)
	return nil
}

func (g *Gateway) closeListenersLocked() {
	for name, l := range g.listeners {
		l.close()
		delete(g.listeners, name)
	}
}

func (g *Gateway) bindLocked(lc *config.Listener) error {
	l, err := g.listen(lc)
	if err != nil {
		return err
	}
	g.listeners[lc.Name] = l
	g.serve(l)
	return nil
}

// track registers a connection; it reports false while draining.
func (g *Gateway) track(c *clientConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining {
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *Gateway) untrack(c *clientConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, c)
	if g.draining && len(g.conns) == 0 {
		select {
		case <-g.idle:
		default:
			close(g.idle)
		}
	}
}

// clientConn is a registered client connection, and after its upgrade all that the gateway
// keeps of it besides the relay (kept small: bench/README.md, idle memory).
type clientConn struct {
	conn net.Conn // the client connection (TLS over the socket, if any)
	g    *Gateway
	l    *listener // set once the listener counts this connection
	slot func()    // frees its per-IP and route slots; nil before admission

	// Set at the upgrade, for the access log line.
	route, ip, backend, subprotocol string

	mu       sync.Mutex
	pair     *proxy.Pair
	shutting bool
}

// setPair publishes the relay; if a drain started meanwhile, the pair is shut at once.
func (c *clientConn) setPair(p *proxy.Pair) {
	c.mu.Lock()
	c.pair = p
	shut := c.shutting
	c.mu.Unlock()
	if shut {
		p.Shutdown(wsframe.CloseGoingAway, "going away")
	}
}

// shutdown starts the drain of this connection: a relay gets 1001 on both sides; a
// connection still in its handshake is cut.
func (c *clientConn) shutdown() {
	c.mu.Lock()
	c.shutting = true
	p := c.pair
	c.mu.Unlock()
	if p != nil {
		p.Shutdown(wsframe.CloseGoingAway, "going away")
	} else {
		c.conn.SetDeadline(time.Now())
	}
}

// abort closes the connection's sockets now.
func (c *clientConn) abort() {
	c.mu.Lock()
	p := c.pair
	c.mu.Unlock()
	if p != nil {
		p.Close()
	}
	c.conn.Close()
}
