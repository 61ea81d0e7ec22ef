package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsframe"
)

// serveConn runs one client connection from accept to close.
func (g *Gateway) serveConn(l *listener, c net.Conn) {
	// After the upgrade the relay owns the connection: its pumps run on goroutines of their
	// own and this goroutine ends, so an idle connection keeps no handshake-sized stack. The
	// deferred cleanups below then run from the relay's completion instead (handedOff).
	handedOff := false
	defer func() {
		if !handedOff {
			g.wg.Done()
		}
	}()
	cc := &clientConn{conn: c, g: g}
	upgraded := false // the client has its 101: a panic is answered with a 1011 close frame
	defer func() {
		if r := recover(); r != nil {
			g.log.Error("connection panic", "client", c.RemoteAddr().String(), "panic", r, "stack", string(debug.Stack()))
			if upgraded {
				var buf [wsframe.MaxHeaderSize + wsframe.MaxControlPayload]byte
				f := wsframe.AppendFrame(buf[:0], wsframe.Header{Fin: true, Opcode: wsframe.OpClose},
					wsframe.AppendClosePayload(nil, wsframe.CloseInternalError, "internal error"))
				cc.conn.SetWriteDeadline(time.Now().Add(time.Second))
				cc.conn.Write(f)
			}
		} else if handedOff {
			return
		}
		c.Close()
	}()
	if !g.track(cc) {
		writeRefusal(c, refuse(http.StatusServiceUnavailable, "shutting down"))
		return
	}
	defer func() {
		if !handedOff {
			cc.release()
		}
	}()

	lc := l.cfg.Load()
	n := l.active.Add(1)
	cc.l = l
	if max := lc.MaxConnections; max > 0 {
		if n > int64(max) {
			// Answer at once, without reading the request: established traffic is not
			// slowed by a flood of new connections.
			g.guard.limited("", c.RemoteAddr().String(), "listener_max_connections")
			g.obs.Handshake("", http.StatusServiceUnavailable)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			writeRefusal(c, refuse(http.StatusServiceUnavailable, "too many connections"))
			return
		}
	}
	cfg := g.cfg.Load()
	start := time.Now()
	hsDeadline := start.Add(cfg.Limits.HandshakeTimeout)
	if cfg.Limits.HandshakeTimeout > 0 {
		c.SetDeadline(hsDeadline)
	}

	conn := c
	st := l.tls.Load()
	isTLS := st != nil
	if isTLS {
		tc := tls.Server(proxy.TLSSocket(c), st.cfg)
		if err := tc.Handshake(); err != nil {
			g.log.Debug("tls handshake failed", "client", c.RemoteAddr().String(), "err", err)
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == "acme-tls/1" {
			return // a TLS-ALPN-01 validation: the handshake itself was the answer
		}
		conn = tc
		cc.conn = tc
	}

	lim := &headLimiter{conn: conn, left: MaxHeaderBytes + readerSize, limiting: true}
	br := proxy.GetReader(lim)
	defer func() {
		if br != nil { // the relay takes ownership of br
			proxy.PutReader(br)
		}
	}()

	h := &handshake{g: g, l: l, lc: lc, cfg: cfg, conn: conn, isTLS: isTLS, start: start}
	req, ref := readRequest(br, lim)
	if req == nil && ref == nil {
		return
	}
	if ref == nil {
		ref = h.prepare(req)
	}
	if ref != nil {
		h.refuse(ref)
		return
	}
	cc.slot = h.release // set by prepare; idempotent
	if d := h.rt.Limits.TCPKeepalive; d > 0 {
		if tc, ok := c.(*net.TCPConn); ok { // the listener turned Go's default probes off
			tc.SetKeepAliveConfig(proxy.KeepAliveConfig(d))
		}
	}
	backend, ref := h.dialBackend(req)
	if ref != nil {
		h.refuse(ref)
		return
	}
	defer func() {
		if !handedOff {
			backend.Conn.Close() // covers a panic before the relay owns it
		}
	}()
	if err := h.accept(req, backend); err != nil {
		backend.Conn.Close()
		proxy.PutReader(backend.Reader)
		g.log.Info("handshake failed", "client", h.clientAddr(), "route", h.rt.Path, "err", err)
		return
	}
	upgraded = true
	lim.limiting = false
	conn.SetDeadline(time.Time{})
	g.obs.Handshake(h.rt.Path, http.StatusSwitchingProtocols)
	cr := br
	br = nil
	// From here the connection keeps only what its end needs (clientConn); the handshake
	// state is dropped, and closed runs the cleanups above.
	cc.route, cc.ip, cc.backend, cc.subprotocol = h.rt.Path, h.ip, h.backendU.String(), backend.Subprotocol
	pair := proxy.NewPair(h.conn, cr, backend.Conn, backend.Reader, h.relayOpts)
	cc.setPair(pair)
	g.obs.Opened(cc.route)
	handedOff = true
	pair.Start(cc.closed)
}

// closed is called by the relay when the pair has ended: metrics, the access log line, then
// the releases.
func (cc *clientConn) closed(res proxy.Result) {
	defer func() {
		cc.release()
		cc.conn.Close() // already closed by the relay; for certainty
		cc.g.wg.Done()
	}()
	defer func() {
		if r := recover(); r != nil {
			cc.g.log.Error("panic after relay", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	cc.logClosed(&res)
}

// release frees the connection's slots: per-IP and route, listener, tracking.
func (cc *clientConn) release() {
	if cc.slot != nil {
		cc.slot()
	}
	if cc.l != nil {
		cc.l.active.Add(-1)
	}
	cc.g.untrack(cc)
}

// relayOptions builds a route's relay options (shared by its connections).
func (g *Gateway) relayOptions(rt *config.Route) *proxy.Options {
	lim := rt.Limits
	throttle := lim.OnLimit != config.OnLimitClose
	route := rt.Path
	return &proxy.Options{
		MaxFrameSize:   lim.MaxFrameSize,
		MaxMessageSize: lim.MaxMessageSize,
		ValidateUTF8:   rt.ValidateUTF8,
		IdleTimeout:    lim.IdleTimeout,
		PingInterval:   lim.PingInterval,
		PongTimeout:    lim.PongTimeout,
		CloseTimeout:   lim.CloseTimeout,
		WriteTimeout:   lim.WriteTimeout,
		ClientRate: proxy.Rate{MessagesPerSecond: lim.MessagesPerSecond, BytesPerSecond: lim.BytesPerSecond,
			Burst: lim.Burst, Throttle: throttle},
		BackendRate: proxy.Rate{MessagesPerSecond: lim.BackendMessagesPerSecond, BytesPerSecond: lim.BackendBytesPerSecond,
			Burst: max(lim.BackendBurst, 1), Throttle: throttle},
		Logger: g.log,
		OnLimit: func(client net.Addr, side proxy.Side, limit string) {
			g.guard.limited(route, client.String(), side.String()+":"+limit)
		},
	}
}

// handshake carries one connection's handshake state.
type handshake struct {
	g     *Gateway
	l     *listener
	lc    *config.Listener
	cfg   *config.Config
	conn  net.Conn
	isTLS bool
	start time.Time

	req       *http.Request
	rt        *config.Route
	ip        string // the client's IP (see clientIP)
	peer      string // the socket peer's IP
	prior     string // trusted incoming X-Forwarded-For chain
	backendU  *url.URL
	release   func()
	relayOpts *proxy.Options
}

func (h *handshake) clientAddr() string { return h.conn.RemoteAddr().String() }

// prepare checks the request (route, upgrade, limits) and returns a refusal or nil.
func (h *handshake) prepare(req *http.Request) *refusal {
	h.req = req
	h.release = func() {}
	h.ip, h.peer, h.prior = clientIP(h.conn.RemoteAddr(), req, h.lc.TrustedProxies)
	path, ok := cleanPath(req.URL.Path)
	if !ok {
		return refuse(http.StatusBadRequest, "request path climbs above the root")
	}
	r := h.g.routes.Load()
	h.rt = r.match(path, h.l.name)
	if h.rt == nil {
		return refuse(http.StatusNotFound, "no route for "+truncate(path, 200))
	}
	if d := h.rt.Limits.HandshakeTimeout; d > 0 && d != h.cfg.Limits.HandshakeTimeout {
		h.conn.SetDeadline(h.start.Add(d))
	}
	h.relayOpts = r.relay[h.rt]
	if ref := checkUpgrade(req, h.rt, h.isTLS); ref != nil {
		return ref
	}
	release, ref := h.g.guard.admit(h.ip, h.rt, time.Now())
	if ref != nil {
		return ref
	}
	h.release = release
	u := *h.rt.Backend
	u.Path = backendPath(h.rt, path)
	u.RawPath = ""
	switch {
	case req.URL.RawQuery == "":
	case u.RawQuery == "":
		u.RawQuery = req.URL.RawQuery
	default:
		u.RawQuery += "&" + req.URL.RawQuery
	}
	h.backendU = &u
	return nil
}

// dialBackend performs the backend handshake; failures map to 502/503/504.
func (h *handshake) dialBackend(req *http.Request) (*proxy.Backend, *refusal) {
	lim := h.rt.Limits
	ctx := context.Background()
	if lim.HandshakeTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, h.start.Add(lim.HandshakeTimeout))
		defer cancel()
	}
	hsTimeout := lim.BackendHandshakeTimeout
	if dl, ok := ctx.Deadline(); ok && (hsTimeout == 0 || time.Until(dl) < hsTimeout) {
		hsTimeout = max(time.Until(dl), time.Millisecond)
	}
	t0 := time.Now()
	b, err := proxy.Dial(ctx, &proxy.BackendRequest{
		URL:              h.backendU,
		Header:           backendHeader(req, h.rt, h),
		DialTimeout:      lim.DialTimeout,
		HandshakeTimeout: hsTimeout,
		TCPKeepalive:     lim.TCPKeepalive,
	})
	if err != nil {
		var de *proxy.DialError
		if errors.As(err, &de) {
			ref := refuse(de.Status, de.Reason)
			ref.logErr = de.Err
			return nil, ref
		}
		return nil, refuse(http.StatusBadGateway, "backend failed")
	}
	h.g.obs.DialLatency(h.rt.Path, time.Since(t0))
	return b, nil
}

// accept answers the client's handshake with 101 (RFC 6455 section 4.2.2).
func (h *handshake) accept(req *http.Request, b *proxy.Backend) error {
	var sb strings.Builder
	sb.Grow(256)
	sb.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	sb.WriteString(wsframe.AcceptKey(req.Header.Get("Sec-WebSocket-Key")))
	sb.WriteString("\r\n")
	if b.Subprotocol != "" {
		sb.WriteString("Sec-WebSocket-Protocol: " + b.Subprotocol + "\r\n")
	}
	for _, c := range b.SetCookie {
		sb.WriteString("Set-Cookie: " + c + "\r\n")
	}
	sb.WriteString("\r\n")
	// handshake_timeout bounds reading the request and the backend dial; the answer itself
	// gets a fresh second, so a backend that answered just in time still yields a 101.
	h.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := io.WriteString(h.conn, sb.String())
	return err
}

// refuse answers the handshake with an HTTP error and logs one line.
func (h *handshake) refuse(ref *refusal) {
	// Free the per-IP and route slots before answering: once the client has its answer, its
	// next handshake must not find this one still counted.
	if h.release != nil {
		h.release()
	}
	route := ""
	if h.rt != nil {
		route = h.rt.Path
	}
	h.g.obs.Handshake(route, ref.status)
	attrs := []any{"client", h.clientAddr(), "status", ref.status, "reason", ref.reason}
	if h.req != nil {
		attrs = append(attrs, "path", truncate(h.req.URL.Path, 200), "route", route)
	}
	if ref.logErr != nil {
		attrs = append(attrs, "err", ref.logErr.Error())
	}
	h.g.log.Info("handshake refused", attrs...)
	h.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if writeRefusal(h.conn, ref) == nil {
		proxy.CloseWrite(h.conn)
	}
}

// logClosed records a finished connection: metrics and the access log line.
func (cc *clientConn) logClosed(res *proxy.Result) {
	cc.g.obs.Closed(cc.route, res)
	cc.g.log.LogAttrs(context.Background(), slog.LevelInfo, "connection",
		slog.String("client", cc.conn.RemoteAddr().String()),
		slog.String("client_ip", cc.ip),
		slog.String("listener", cc.l.name),
		slog.String("route", cc.route),
		slog.String("backend", cc.backend),
		slog.String("subprotocol", cc.subprotocol),
		slog.Duration("duration", res.End.Sub(res.Start)),
		slog.Uint64("client_frames", res.Client.DataFrames+res.Client.ControlFrames),
		slog.Uint64("client_bytes", res.Client.Bytes),
		slog.Uint64("backend_frames", res.Backend.DataFrames+res.Backend.ControlFrames),
		slog.Uint64("backend_bytes", res.Backend.Bytes),
		slog.Int("client_close_received", int(res.ClientClose.Received)),
		slog.String("client_close_received_reason", res.ClientClose.ReceivedReason),
		slog.Int("client_close_sent", int(res.ClientClose.Sent)),
		slog.String("client_close_sent_reason", res.ClientClose.SentReason),
		slog.Int("backend_close_received", int(res.BackendClose.Received)),
		slog.String("backend_close_received_reason", res.BackendClose.ReceivedReason),
		slog.Int("backend_close_sent", int(res.BackendClose.Sent)),
		slog.String("backend_close_sent_reason", res.BackendClose.SentReason),
		slog.String("closed_by", res.ClosedBy),
		slog.String("cause", res.Cause),
	)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
