package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/config"
)

// listener is one bound listen block.
type listener struct {
	name    string
	cfg     atomic.Pointer[config.Listener]
	ln      net.Listener
	tls     atomic.Pointer[tlsState] // what new handshakes use; nil for plain ws://
	http    *http.Server             // the http_address listener (ACME HTTP-01 and redirect), if any
	httpLn  net.Listener
	active  atomic.Int64 // open connections, for max_connections
	workers *connWorkers // goroutines that serve accepted connections (workers.go)

	mu        sync.Mutex
	retired   []retiredTLS // replaced TLS providers, closed after a grace period
	closed    bool
	closeOnce sync.Once
}

// retiredTLS is a replaced TLS provider and the timer that closes it.
type retiredTLS struct {
	p TLSProvider
	t *time.Timer
}

// tlsState is a listener's TLS provider and the configuration it serves.
type tlsState struct {
	p   TLSProvider
	cfg *tls.Config
}

// listen binds lc's address (and its http_address, with TLS), then builds its TLS provider:
// the sockets exist before ACME starts, so the challenge solvers reach the gateway's own
// listeners and certmagic never binds :80/:443 itself.
func (g *Gateway) listen(lc *config.Listener) (_ *listener, err error) {
	l := &listener{name: lc.Name, workers: newConnWorkers()}
	l.cfg.Store(lc)
	defer func() {
		if err != nil {
			if l.ln != nil {
				l.ln.Close()
			}
			if l.httpLn != nil {
				l.httpLn.Close()
			}
		}
	}()
	if lc.TLS != nil && g.opts.TLS == nil {
		return nil, fmt.Errorf("listener %q: TLS is not available", lc.Name)
	}
	// No TCP keepalive on accepted sockets (Go's default is probes every 15 s): a route's
	// tcp_keepalive turns it on once the request has chosen the route.
	noKeepalive := net.ListenConfig{KeepAlive: -1}
	if l.ln, err = noKeepalive.Listen(context.Background(), "tcp", lc.Address); err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	if lc.TLS == nil {
		return l, nil
	}
	if lc.TLS.HTTPAddress != "" {
		if l.httpLn, err = net.Listen("tcp", lc.TLS.HTTPAddress); err != nil {
			return nil, fmt.Errorf("listener %q http_address: %w", lc.Name, err)
		}
	}
	p, err := g.opts.TLS(lc)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	l.tls.Store(&tlsState{p: p, cfg: p.TLSConfig()})
	if l.httpLn != nil {
		l.http = l.httpServer()
	}
	return l, nil
}

// httpServer is the server of l's http_address. The current provider answers: a reload may
// replace it.
func (l *listener) httpServer() *http.Server {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.tls.Load().p.HTTPHandler().ServeHTTP(w, r)
	})
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
}

// moveHTTP replaces l's http_address listener with ln (nil: none any more), bound by the
// caller. Called with the gateway's mu held.
func (g *Gateway) moveHTTP(l *listener, ln net.Listener) {
	if l.http != nil {
		l.http.Close()
	}
	l.http, l.httpLn = nil, ln
	if ln != nil {
		l.http = l.httpServer()
		g.serveHTTP(l)
	}
	g.log.Info("http_address moved", "listener", l.name, "address", addrOf(ln))
}

// addrOf is ln's address, or "" for none.
func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// retire closes p, a provider the listener no longer serves, after grace (so handshakes begun
// on it can finish), or when the listener closes, whichever comes first.
func (l *listener) retire(p TLSProvider, grace time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		p.Close()
		return
	}
	l.retired = append(l.retired, retiredTLS{p, time.AfterFunc(grace, func() { p.Close() })})
}

// serve starts the accept loops of l; they end when l is closed.
func (g *Gateway) serve(l *listener) {
	g.wg.Add(1)
	go g.acceptLoop(l)
	if l.http != nil {
		g.serveHTTP(l)
	}
	g.log.Info("listening", "listener", l.name, "address", l.ln.Addr().String(), "tls", l.tls.Load() != nil)
}

// serveHTTP serves l's http_address until its server is closed.
func (g *Gateway) serveHTTP(l *listener) {
	srv, ln := l.http, l.httpLn
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		srv.Serve(ln)
	}()
}

func (g *Gateway) acceptLoop(l *listener) {
	defer g.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			g.log.Warn("accept failed", "listener", l.name, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		g.wg.Add(1)
		g.dispatch(l, c)
	}
}

// close stops accepting; open connections are not touched.
func (l *listener) close() {
	l.closeOnce.Do(func() {
		l.ln.Close()
		close(l.workers.stop)
		if l.http != nil {
			l.http.Close()
		}
		l.mu.Lock()
		l.closed = true
		retired := l.retired
		l.retired = nil
		l.mu.Unlock()
		for _, r := range retired {
			r.t.Stop()
			r.p.Close() // a no-op if its timer did it already
		}
		if st := l.tls.Load(); st != nil {
			st.p.Close()
		}
	})
}
