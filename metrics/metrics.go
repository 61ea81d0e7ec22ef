// Package metrics is wsgate's Prometheus instrumentation: a gateway.Observer that folds each
// connection's counts into the metrics when it closes, plus configuration and certificate
// state collected at scrape time. Every metric is named wsgate_* and lives in the Metrics'
// own registry, next to the Go runtime and process collectors.
//
// Nothing here runs per frame: the relay counts frames and bytes in plain fields owned by its
// pumps and hands the totals over once, in Closed. Frames and bytes of a long-lived
// connection therefore appear in the counters when it closes.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsgate/wsgate/proxy"
)

// Label values of the direction label: which side sent what was counted.
const (
	ClientToBackend = "client_to_backend"
	BackendToClient = "backend_to_client"
)

// DialBuckets are the backend dial-latency histogram's upper bounds in seconds: 0.5 ms (a
// loopback backend) to 10 s (the default backend handshake timeout).
var DialBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// DurationBuckets are the connection-duration histogram's upper bounds in seconds: 1 s to a
// day.
var DurationBuckets = []float64{1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}

// Metrics is the gateway's metric set. It implements gateway.Observer; the zero value is not
// usable, call New.
type Metrics struct {
	reg *prometheus.Registry

	active      *prometheus.GaugeVec
	handshakes  *prometheus.CounterVec
	dial        *prometheus.HistogramVec
	frames      *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	messages    *prometheus.CounterVec
	overLimit   *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	admission   *prometheus.CounterVec
	protoErrors *prometheus.CounterVec
	closeSent   *prometheus.CounterVec
	closeRecv   *prometheus.CounterVec
	closedBy    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	reloads     *prometheus.CounterVec
	lastReload  prometheus.Gauge
	trims       prometheus.Counter
	trimmed     prometheus.Counter

	configHash atomic.Pointer[string]
	certs      atomic.Pointer[func() map[string]time.Time]

	// routes maps a route path to its resolved series; it is replaced whole (copy on write)
	// when a route is first seen, so lookups take no lock.
	routes  atomic.Pointer[map[string]*routeSet]
	routeMu sync.Mutex
}

// New returns a metric set registered in a fresh registry together with the Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wsgate_connections_active",
		Help: "Relayed WebSocket connections open now (after the 101, until both sides are closed).",
	}, []string{"route"})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_handshakes_total",
		Help: `Client handshakes by HTTP status: 101 when relayed, else the refusal's status. route is "" when no route matched (404, listener connection cap).`,
	}, []string{"route", "status"})
	m.dial = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wsgate_backend_dial_duration_seconds",
		Help:    "Time to dial the backend and complete its WebSocket handshake, for successful dials.",
		Buckets: DialBuckets,
	}, []string{"route"})
	m.frames = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_frames_total",
		Help: "Frames read from the sending side, by direction and opcode class (data or control; control frames are handled by the gateway, not forwarded). Counted when the connection closes.",
	}, []string{"route", "direction", "class"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_bytes_total",
		Help: "Payload bytes of data frames relayed, by direction (headers and control frames not included). Counted when the connection closes.",
	}, []string{"route", "direction"})
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_messages_total",
		Help: "Complete data messages relayed, by direction. Counted when the connection closes.",
	}, []string{"route", "direction"})
	m.overLimit = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_messages_over_limit_total",
		Help: "Frames or messages refused for size (max_frame_size, max_message_size), by the direction they were sent in. Each closes the connection with 1009.",
	}, []string{"route", "direction", "limit"})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_rate_limited_total",
		Help: `Data frames that exceeded a rate limit, by direction and action: "throttle" (the frame was delayed) or "close" (the connection was closed with 1008).`,
	}, []string{"route", "direction", "action"})
	m.admission = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_handshakes_limited_total",
		Help: "Handshakes refused by an admission limit (handshakes_per_ip_per_second, max_connections_per_ip, route_max_connections, listener_max_connections).",
	}, []string{"route", "limit"})
	m.protoErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_protocol_errors_total",
		Help: "Connections the gateway closed because a side broke the protocol or a limit, by that side and the close code it was sent (1002 protocol, 1007 invalid UTF-8, 1008 rate, 1009 too big).",
	}, []string{"route", "side", "code"})
	m.closeSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_close_sent_total",
		Help: `Close frames the gateway wrote to each side, by code ("1005" = a close without a code, "none" = no close frame could be written). Counted when the connection closes.`,
	}, []string{"route", "side", "code"})
	m.closeRecv = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_close_received_total",
		Help: `Close frames received from each side, by code ("1005" = a close without a code, "none" = the side sent no close frame). Counted when the connection closes.`,
	}, []string{"route", "side", "code"})
	m.closedBy = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_connections_closed_total",
		Help: `Relayed connections ended, by who started the close: "client", "backend" or "gateway".`,
	}, []string{"route", "closed_by"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wsgate_connection_duration_seconds",
		Help:    "Lifetime of relayed connections, from the 101 to the end of the close.",
		Buckets: DurationBuckets,
	}, []string{"route"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_config_reloads_total",
		Help: `Configuration reloads (SIGHUP or POST /reload) by result: "success" or "failure" (the old configuration stays).`,
	}, []string{"result"})
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsgate_config_last_reload_success_timestamp_seconds",
		Help: "Unix time the running configuration was loaded (at start or by the last successful reload).",
	})
	m.trims = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wsgate_memory_trims_total",
		Help: "Times the heap's free pages were returned to the operating system after a burst of allocation (such as a connection storm) ended.",
	})
	m.trimmed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wsgate_memory_trimmed_bytes_total",
		Help: "Bytes of heap returned to the operating system by those trims.",
	})
	// Both results exist from the start, so rate() and alerts see 0 rather than nothing.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.reg.MustRegister(
		m.active, m.handshakes, m.dial, m.frames, m.bytes, m.messages, m.overLimit,
		m.rateLimited, m.admission, m.protoErrors, m.closeSent, m.closeRecv, m.closedBy,
		m.duration, m.reloads, m.lastReload, m.trims, m.trimmed, stateCollector{m},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsgate_relay_parked_sides",
			Help: "Connection sides parked by the relay: idle for about a second, held with no goroutine or buffer until data arrives (two per idle connection).",
		}, func() float64 { return float64(proxy.Parked()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	empty := map[string]*routeSet{}
	m.routes.Store(&empty)
	return m
}

// Registry returns the registry holding every metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats (text by default).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// SetCertificateSource sets the function read at every scrape for
// wsgate_certificate_expiry_timestamp_seconds (for example (*gateway.Gateway).CertExpiry).
func (m *Metrics) SetCertificateSource(f func() map[string]time.Time) {
	m.certs.Store(&f)
}

// ConfigLoaded records the configuration now in use (at start): its hash and the time.
func (m *Metrics) ConfigLoaded(hash string) {
	m.configHash.Store(&hash)
	m.lastReload.Set(float64(time.Now().UnixNano()) / 1e9)
}

// Reloaded records a reload attempt; on success hash is the new configuration's.
func (m *Metrics) Reloaded(hash string, ok bool) {
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.ConfigLoaded(hash)
}

// MemoryTrimmed records a trim of the heap that returned released bytes to the operating
// system (see internal/memtrim).
func (m *Metrics) MemoryTrimmed(released uint64) {
	m.trims.Inc()
	addUint(m.trimmed, released)
}

// routeSet holds one route's series, resolved once so that Closed needs no label lookups for
// the fixed label combinations.
type routeSet struct {
	active   prometheus.Gauge
	dial     prometheus.Observer
	duration prometheus.Observer
	frames   [2][2]prometheus.Counter // [direction][class: data, control]
	bytes    [2]prometheus.Counter
	messages [2]prometheus.Counter

	// Series with open-ended label values (status and close codes, limit names), created on
	// first use.
	mu  sync.Mutex
	dyn map[dynKey]prometheus.Counter
}

// dynKey names one series of a routeSet's dyn map.
type dynKey struct {
	kind dynKind
	side proxy.Side
	code int    // status or close code
	name string // limit name, closed_by
}

type dynKind uint8

const (
	kindHandshake dynKind = iota
	kindCloseSent
	kindCloseRecv
	kindProtoError
	kindClosedBy
	kindOverLimit
	kindRate
	kindAdmission
)

var directions = [2]string{ClientToBackend, BackendToClient} // indexed by proxy.Side

// route returns the series of route, creating them on first use.
func (m *Metrics) route(route string) *routeSet {
	if rs := (*m.routes.Load())[route]; rs != nil {
		return rs
	}
	m.routeMu.Lock()
	defer m.routeMu.Unlock()
	old := *m.routes.Load()
	if rs := old[route]; rs != nil {
		return rs
	}
	rs := &routeSet{
		active:   m.active.WithLabelValues(route),
		dial:     m.dial.WithLabelValues(route),
		duration: m.duration.WithLabelValues(route),
		dyn:      make(map[dynKey]prometheus.Counter),
	}
	for d, dir := range directions {
		rs.frames[d][0] = m.frames.WithLabelValues(route, dir, "data")
		rs.frames[d][1] = m.frames.WithLabelValues(route, dir, "control")
		rs.bytes[d] = m.bytes.WithLabelValues(route, dir)
		rs.messages[d] = m.messages.WithLabelValues(route, dir)
	}
	next := make(map[string]*routeSet, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[route] = rs
	m.routes.Store(&next)
	return rs
}

// counter returns the dyn series k of route rs; called with rs.mu held. Only the first use of
// a key allocates.
func (m *Metrics) counterLocked(route string, rs *routeSet, k dynKey) prometheus.Counter {
	if c := rs.dyn[k]; c != nil {
		return c
	}
	var c prometheus.Counter
	switch k.kind {
	case kindHandshake:
		c = m.handshakes.WithLabelValues(route, strconv.Itoa(k.code))
	case kindCloseSent:
		c = m.closeSent.WithLabelValues(route, k.side.String(), codeLabel(k.code))
	case kindCloseRecv:
		c = m.closeRecv.WithLabelValues(route, k.side.String(), codeLabel(k.code))
	case kindProtoError:
		c = m.protoErrors.WithLabelValues(route, k.side.String(), codeLabel(k.code))
	case kindClosedBy:
		c = m.closedBy.WithLabelValues(route, k.name)
	case kindOverLimit:
		c = m.overLimit.WithLabelValues(route, directions[k.side], k.name)
	case kindRate:
		c = m.rateLimited.WithLabelValues(route, directions[k.side], k.name)
	case kindAdmission:
		c = m.admission.WithLabelValues(route, k.name)
	}
	rs.dyn[k] = c
	return c
}

func codeLabel(code int) string {
	if code == 0 {
		return "none"
	}
	return strconv.Itoa(code)
}

func (m *Metrics) inc(route string, k dynKey) {
	rs := m.route(route)
	rs.mu.Lock()
	c := m.counterLocked(route, rs, k)
	rs.mu.Unlock()
	c.Inc()
}

// Handshake implements gateway.Observer.
func (m *Metrics) Handshake(route string, status int) {
	m.inc(route, dynKey{kind: kindHandshake, code: status})
}

// DialLatency implements gateway.Observer.
func (m *Metrics) DialLatency(route string, d time.Duration) {
	m.route(route).dial.Observe(d.Seconds())
}

// Opened implements gateway.Observer.
func (m *Metrics) Opened(route string) { m.route(route).active.Inc() }

// Closed implements gateway.Observer: it folds the connection's counts into the metrics.
func (m *Metrics) Closed(route string, r *proxy.Result) {
	rs := m.route(route)
	rs.active.Dec()
	for s, st := range [2]*proxy.DirStats{&r.Client, &r.Backend} {
		addUint(rs.frames[s][0], st.DataFrames)
		addUint(rs.frames[s][1], st.ControlFrames)
		addUint(rs.bytes[s], st.Bytes)
		addUint(rs.messages[s], st.Messages)
	}
	if !r.Start.IsZero() && !r.End.IsZero() {
		rs.duration.Observe(r.End.Sub(r.Start).Seconds())
	}
	closedBy := r.ClosedBy
	if closedBy == "" {
		closedBy = "unknown"
	}
	rs.mu.Lock()
	for s, ci := range [2]*proxy.CloseInfo{&r.ClientClose, &r.BackendClose} {
		side := proxy.Side(s)
		m.counterLocked(route, rs, dynKey{kind: kindCloseSent, side: side, code: int(ci.Sent)}).Inc()
		m.counterLocked(route, rs, dynKey{kind: kindCloseRecv, side: side, code: int(ci.Received)}).Inc()
	}
	if code := r.ProtocolErrorCode; code != 0 {
		// The culprit is the side that was sent the error code; the other got 1001 or 1014.
		side := proxy.SideBackend
		if r.ClientClose.Sent == code {
			side = proxy.SideClient
		}
		m.counterLocked(route, rs, dynKey{kind: kindProtoError, side: side, code: int(code)}).Inc()
	}
	m.counterLocked(route, rs, dynKey{kind: kindClosedBy, name: closedBy}).Inc()
	rs.mu.Unlock()
}

func addUint(c prometheus.Counter, n uint64) {
	if n > 0 {
		c.Add(float64(n))
	}
}

// Limit implements gateway.Observer. Relay limits arrive as "side:name" (from the relay's
// OnLimit), admission limits as a bare name. Protocol errors and invalid UTF-8 are counted
// from the connection's Result instead (wsgate_protocol_errors_total), by close code.
func (m *Metrics) Limit(route, limit string) {
	sideName, name, relayed := strings.Cut(limit, ":")
	if !relayed {
		m.inc(route, dynKey{kind: kindAdmission, name: limit})
		return
	}
	side := proxy.SideClient
	if sideName == "backend" {
		side = proxy.SideBackend
	}
	switch name {
	case "protocol_error", "invalid_utf8":
	case "rate":
		m.inc(route, dynKey{kind: kindRate, side: side, name: "close"})
	case "rate_throttle":
		m.inc(route, dynKey{kind: kindRate, side: side, name: "throttle"})
	default:
		m.inc(route, dynKey{kind: kindOverLimit, side: side, name: name})
	}
}

// stateCollector reads the configuration hash and certificate expiry at scrape time.
type stateCollector struct{ m *Metrics }

var (
	configInfoDesc = prometheus.NewDesc("wsgate_config_info",
		"The running configuration: 1, labelled with the hex SHA-256 of its file.", []string{"hash"}, nil)
	certExpiryDesc = prometheus.NewDesc("wsgate_certificate_expiry_timestamp_seconds",
		"Unix time the certificate served for a name expires (NotAfter), read from the TLS listeners at scrape time; the earliest when several listeners serve the name.",
		[]string{"name"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- configInfoDesc
	ch <- certExpiryDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	if h := c.m.configHash.Load(); h != nil {
		ch <- prometheus.MustNewConstMetric(configInfoDesc, prometheus.GaugeValue, 1, *h)
	}
	if f := c.m.certs.Load(); f != nil {
		for name, t := range (*f)() {
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(t.Unix()), name)
		}
	}
}
