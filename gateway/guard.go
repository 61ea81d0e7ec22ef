package gateway

import (
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/httphdr"
)

// maxIPEntries bounds the per-IP table. Past it, idle entries are evicted at once, so an
// attacker spraying source addresses cannot grow it without bound: what remains are entries
// with open connections, which the file-descriptor limit already bounds.
const maxIPEntries = 50_000

// sweepEvery is how often idle per-IP entries are dropped in normal operation.
const sweepEvery = 10 * time.Second

// guard applies the per-IP and per-route admission limits of DESIGN.md's limits block, and
// rate-limits the log lines of every limit that fires.
type guard struct {
	log *slog.Logger
	obs Observer

	mu        sync.Mutex
	ips       map[netip.Addr]*ipEntry
	routes    map[string]int // open connections per route path
	lastSweep time.Time

	logLim     *rate.Limiter
	suppressed int // log lines dropped since the last one written (under mu)
}

type ipEntry struct {
	conns int
	hs    *rate.Limiter // nil when the handshake rate is unlimited
	last  time.Time
}

func newGuard(log *slog.Logger, obs Observer) *guard {
	return &guard{
		log:    log,
		obs:    obs,
		ips:    make(map[netip.Addr]*ipEntry),
		routes: make(map[string]int),
		logLim: rate.NewLimiter(10, 20),
	}
}

// admit checks a handshake from ip for rt at now: the per-IP handshake rate and connection
// cap (429 with Retry-After) and the route's connection cap (503). On success it returns the
// function that releases the connection's slots when it ends.
func (g *guard) admit(ipStr string, rt *config.Route, now time.Time) (func(), *refusal) {
	ip, _ := netip.ParseAddr(ipStr)
	lim := rt.Limits
	g.mu.Lock()
	if now.Sub(g.lastSweep) > sweepEvery || len(g.ips) >= maxIPEntries {
		g.sweepLocked(now)
	}
	e := g.ips[ip]
	if e == nil {
		e = &ipEntry{}
		g.ips[ip] = e
	}
	e.last = now
	if lim.HandshakesPerIPPerSecond > 0 {
		if e.hs == nil || e.hs.Limit() != rate.Limit(lim.HandshakesPerIPPerSecond) {
			burst := max(int(math.Ceil(lim.HandshakesPerIPPerSecond)), 1)
			e.hs = rate.NewLimiter(rate.Limit(lim.HandshakesPerIPPerSecond), burst)
		}
		if !e.hs.AllowN(now, 1) {
			g.mu.Unlock()
			wait := max(int(math.Ceil(1/lim.HandshakesPerIPPerSecond)), 1)
			g.limited(rt.Path, ipStr, "handshakes_per_ip_per_second")
			return nil, refuse(http.StatusTooManyRequests, "too many handshakes from this address", "Retry-After", strconv.Itoa(wait))
		}
	}
	if max := lim.MaxConnectionsPerIP; max > 0 && e.conns >= max {
		g.mu.Unlock()
		g.limited(rt.Path, ipStr, "max_connections_per_ip")
		return nil, refuse(http.StatusTooManyRequests, "too many connections from this address", "Retry-After", "1")
	}
	if max := lim.MaxConnections; max > 0 && g.routes[rt.Path] >= max {
		g.mu.Unlock()
		g.limited(rt.Path, ipStr, "route_max_connections")
		return nil, refuse(http.StatusServiceUnavailable, "route connection limit reached")
	}
	e.conns++
	g.routes[rt.Path]++
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			e.conns--
			if g.routes[rt.Path]--; g.routes[rt.Path] <= 0 {
				delete(g.routes, rt.Path)
			}
			g.mu.Unlock()
		})
	}, nil
}

// sweepLocked drops entries without open connections whose handshake bucket has refilled
// (or, when the table is full, every entry without open connections).
func (g *guard) sweepLocked(now time.Time) {
	full := len(g.ips) >= maxIPEntries
	for ip, e := range g.ips {
		if e.conns > 0 {
			continue
		}
		if full || e.hs == nil || e.hs.TokensAt(now) >= float64(e.hs.Burst()) {
			delete(g.ips, ip)
		}
	}
	g.lastSweep = now
}

// entries returns the size of the per-IP table (for tests and metrics).
func (g *guard) entries() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.ips)
}

// limited counts a limit that fired and logs it, at most 10 lines a second (burst 20); the
// next line written says how many were suppressed.
func (g *guard) limited(route, client, limit string) {
	g.obs.Limit(route, limit)
	g.mu.Lock()
	if !g.logLim.Allow() {
		g.suppressed++
		g.mu.Unlock()
		return
	}
	sup := g.suppressed
	g.suppressed = 0
	g.mu.Unlock()
	g.log.Warn("limit reached", "client", client, "route", route, "limit", limit, "suppressed", sup)
}

// clientIP returns the client's IP: the socket's peer, or, when the peer is a trusted proxy,
// the right-most address of X-Forwarded-For that is not itself a trusted proxy. prior is the
// incoming X-Forwarded-For chain when the peer is trusted ("" otherwise: an untrusted client's
// header is dropped); the gateway forwards prior followed by the peer's address.
func clientIP(remote net.Addr, req *http.Request, trusted []string) (ip, peer, prior string) {
	peer, _, err := net.SplitHostPort(remote.String())
	if err != nil {
		peer = remote.String()
	}
	pa, err := netip.ParseAddr(peer)
	if err != nil || len(trusted) == 0 || !inPrefixes(pa.Unmap(), trusted) {
		return peer, peer, ""
	}
	hops := httphdr.Tokens(req.Header, "X-Forwarded-For")
	ip = peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			break
		}
		ip = a.Unmap().String()
		if !inPrefixes(a.Unmap(), trusted) {
			break
		}
	}
	return ip, peer, strings.Join(hops, ", ")
}

func inPrefixes(a netip.Addr, cidrs []string) bool {
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(a) {
			return true
		}
		if b, err := netip.ParseAddr(c); err == nil && b.Unmap() == a {
			return true
		}
	}
	return false
}
