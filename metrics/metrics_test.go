package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wsgate/wsgate/gateway"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsframe"
)

var _ gateway.Observer = (*metrics.Metrics)(nil)

// scrape fetches /metrics from the handler in the text format and parses it.
func scrape(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of the series of name whose labels include want ("k=v" pairs), or
// -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func result() *proxy.Result {
	start := time.Now()
	return &proxy.Result{
		Client:       proxy.DirStats{DataFrames: 5, ControlFrames: 1, Bytes: 100, Messages: 4},
		Backend:      proxy.DirStats{DataFrames: 3, ControlFrames: 2, Bytes: 30, Messages: 3},
		ClientClose:  proxy.CloseInfo{Received: 1000, ReceivedReason: "bye", Sent: 1000, SentReason: "bye"},
		BackendClose: proxy.CloseInfo{Received: 1000, Sent: 1000, SentReason: "bye"},
		ClosedBy:     "client",
		Start:        start,
		End:          start.Add(2 * time.Second),
	}
}

func TestClosedFoldsResult(t *testing.T) {
	m := metrics.New()
	m.Handshake("/chat/", 101)
	m.Handshake("/chat/", 101)
	m.Handshake("", 404)
	m.DialLatency("/chat/", 3*time.Millisecond)
	m.Opened("/chat/")
	m.Opened("/chat/")
	m.Closed("/chat/", result())
	bad := &proxy.Result{
		Client:            proxy.DirStats{DataFrames: 1, Bytes: 2000},
		ClientClose:       proxy.CloseInfo{Sent: wsframe.CloseTooBig, SentReason: "message too big"},
		BackendClose:      proxy.CloseInfo{Sent: wsframe.CloseGoingAway, Received: wsframe.CloseGoingAway},
		ClosedBy:          "gateway",
		ProtocolErrorCode: wsframe.CloseTooBig,
	}
	m.Closed("/chat/", bad)
	m.Limit("/chat/", "client:max_message_size")
	m.Limit("/chat/", "backend:rate_throttle")
	m.Limit("/chat/", "backend:rate_throttle")
	m.Limit("/chat/", "client:rate")
	m.Limit("/chat/", "client:protocol_error") // counted from the Result, by code
	m.Limit("/chat/", "max_connections_per_ip")

	f := scrape(t, m)
	r := "route=/chat/"
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wsgate_handshakes_total", []string{r, "status=101"}, 2},
		{"wsgate_handshakes_total", []string{"route=", "status=404"}, 1},
		{"wsgate_backend_dial_duration_seconds", []string{r}, 1},
		{"wsgate_connections_active", []string{r}, 0},
		{"wsgate_frames_total", []string{r, "direction=client_to_backend", "class=data"}, 6},
		{"wsgate_frames_total", []string{r, "direction=client_to_backend", "class=control"}, 1},
		{"wsgate_frames_total", []string{r, "direction=backend_to_client", "class=data"}, 3},
		{"wsgate_frames_total", []string{r, "direction=backend_to_client", "class=control"}, 2},
		{"wsgate_bytes_total", []string{r, "direction=client_to_backend"}, 2100},
		{"wsgate_bytes_total", []string{r, "direction=backend_to_client"}, 30},
		{"wsgate_messages_total", []string{r, "direction=client_to_backend"}, 4},
		{"wsgate_close_sent_total", []string{r, "side=client", "code=1000"}, 1},
		{"wsgate_close_sent_total", []string{r, "side=client", "code=1009"}, 1},
		{"wsgate_close_sent_total", []string{r, "side=backend", "code=1001"}, 1},
		{"wsgate_close_received_total", []string{r, "side=client", "code=none"}, 1},
		{"wsgate_close_received_total", []string{r, "side=backend", "code=1000"}, 1},
		{"wsgate_protocol_errors_total", []string{r, "side=client", "code=1009"}, 1},
		{"wsgate_connections_closed_total", []string{r, "closed_by=client"}, 1},
		{"wsgate_connections_closed_total", []string{r, "closed_by=gateway"}, 1},
		{"wsgate_connection_duration_seconds", []string{r}, 1}, // bad has no Start/End
		{"wsgate_messages_over_limit_total", []string{r, "direction=client_to_backend", "limit=max_message_size"}, 1},
		{"wsgate_rate_limited_total", []string{r, "direction=backend_to_client", "action=throttle"}, 2},
		{"wsgate_rate_limited_total", []string{r, "direction=client_to_backend", "action=close"}, 1},
		{"wsgate_handshakes_limited_total", []string{r, "limit=max_connections_per_ip"}, 1},
		{"wsgate_config_reloads_total", []string{"result=failure"}, 0},
	}
	for _, c := range checks {
		if got := value(f, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := value(f, "wsgate_protocol_errors_total", r, "side=client", "code=1002"); got != -1 {
		t.Errorf("protocol_error limit event counted twice: %v", got)
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if f[name] == nil {
			t.Errorf("no %s: Go/process collectors missing", name)
		}
	}
}

func TestConfigAndCertificates(t *testing.T) {
	m := metrics.New()
	before := time.Now().Unix()
	m.ConfigLoaded("aaaa")
	m.Reloaded("", false)
	m.Reloaded("bbbb", true)
	m.MemoryTrimmed(3 << 20)
	m.MemoryTrimmed(5 << 20)
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	calls := 0
	m.SetCertificateSource(func() map[string]time.Time {
		calls++
		return map[string]time.Time{"ws.example.com": exp}
	})
	f := scrape(t, m)
	if got := value(f, "wsgate_config_info", "hash=bbbb"); got != 1 {
		t.Errorf("config_info{hash=bbbb} = %v", got)
	}
	if got := value(f, "wsgate_config_info", "hash=aaaa"); got != -1 {
		t.Errorf("old hash still exported: %v", got)
	}
	if got := value(f, "wsgate_config_reloads_total", "result=success"); got != 1 {
		t.Errorf("reloads success = %v", got)
	}
	if got := value(f, "wsgate_memory_trims_total"); got != 2 {
		t.Errorf("memory trims = %v, want 2", got)
	}
	if got := value(f, "wsgate_memory_trimmed_bytes_total"); got != 8<<20 {
		t.Errorf("memory trimmed bytes = %v, want %d", got, 8<<20)
	}
	if got := value(f, "wsgate_config_reloads_total", "result=failure"); got != 1 {
		t.Errorf("reloads failure = %v", got)
	}
	if got := value(f, "wsgate_config_last_reload_success_timestamp_seconds"); got < float64(before) || got > float64(time.Now().Unix()+1) {
		t.Errorf("last reload timestamp = %v", got)
	}
	if got := value(f, "wsgate_certificate_expiry_timestamp_seconds", "name=ws.example.com"); got != float64(exp.Unix()) {
		t.Errorf("certificate expiry = %v, want %d", got, exp.Unix())
	}
	scrape(t, m)
	if calls != 2 {
		t.Errorf("certificate source read %d times for 2 scrapes, want at scrape time", calls)
	}
}

// BenchmarkClosed measures the fold-in of one finished connection: the only place frame and
// byte counts reach the metrics. It must not allocate once a route's series exist.
func BenchmarkClosed(b *testing.B) {
	m := metrics.New()
	r := result()
	m.Opened("/chat/")
	m.Closed("/chat/", r)
	b.ReportAllocs()
	for b.Loop() {
		m.Opened("/chat/")
		m.Closed("/chat/", r)
	}
}

func TestClosedDoesNotAllocate(t *testing.T) {
	m := metrics.New()
	r := result()
	m.Handshake("/chat/", 101)
	m.Opened("/chat/")
	m.Closed("/chat/", r)
	m.Limit("/chat/", "client:rate_throttle")
	if n := testing.AllocsPerRun(100, func() {
		m.Handshake("/chat/", 101)
		m.DialLatency("/chat/", time.Millisecond)
		m.Opened("/chat/")
		m.Closed("/chat/", r)
		m.Limit("/chat/", "client:rate_throttle")
	}); n != 0 {
		t.Fatalf("%v allocations per connection, want 0", n)
	}
}
