package gateway_test

// Operations tests (issue 6): reload under load, listener moves, metrics after a scripted
// scenario, the JSON access log, and the cost of the metrics observer per relayed frame.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wsgate/wsgate/admin"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/gateway"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/wsframe"
)

// startGatewayObs is startGateway with an observer.
func startGatewayObs(t testing.TB, hcl string, obs gateway.Observer) *testGateway {
	t.Helper()
	cfg := mustParse(t, hcl)
	lb := &logBuffer{}
	g := gateway.New(cfg, gateway.Options{
		Logger:   slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Observer: obs,
	})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		g.Drain(ctx)
	})
	return &testGateway{Gateway: g, log: lb}
}

func mustParse(t testing.TB, hcl string) *config.Config {
	t.Helper()
	cfg, diags := config.Parse([]byte(hcl), "test.hcl")
	if diags.HasErrors() {
		t.Fatalf("config: %s", diags.Error())
	}
	return cfg
}

// taggedEcho is a gorilla backend that answers every message with TAG ":" message, so a
// client can tell which backend its connection reached.
type taggedEcho struct {
	srv *httptest.Server
	wg  sync.WaitGroup
}

func newTaggedEcho(t testing.TB, tag string) *taggedEcho {
	e := &taggedEcho{}
	up := gorilla.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.wg.Add(1)
		defer e.wg.Done()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if c.WriteMessage(typ, append([]byte(tag+":"), msg...)) != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		e.srv.CloseClientConnections()
		e.srv.Close()
		e.wg.Wait()
	})
	return e
}

func (e *taggedEcho) addr() string { return strings.TrimPrefix(e.srv.URL, "http://") }

// opsLimits lifts the per-IP and rate limits: every test client comes from 127.0.0.1.
const opsLimits = `
limits {
  messages_per_second          = 0
  bytes_per_second             = 0
  handshakes_per_ip_per_second = 0
  max_connections_per_ip       = 0
}
`

// TestReloadUnderLoad reloads a gateway 20 times (two valid configurations and an invalid
// one in turn) while 200 connections exchange numbered messages: none may be dropped, lose
// or reorder a message, or change backend; new connections follow the routes of the
// configuration in force.
func TestReloadUnderLoad(t *testing.T) {
	a, b := newTaggedEcho(t, "A"), newTaggedEcho(t, "B")
	listen := `listen "pub" { address = "127.0.0.1:0" }` + opsLimits
	cfgA := listen + fmt.Sprintf(`
route "/live"   { backend = "ws://%s/" }
route "/only-a" { backend = "ws://%s/" }
`, a.addr(), a.addr())
	cfgB := listen + fmt.Sprintf(`
route "/live"   { backend = "ws://%s/" }
route "/only-b" { backend = "ws://%s/" }
`, b.addr(), b.addr())
	invalid := listen + `route "/live" { backend = "http://not-a-websocket" }`
	g := startGatewayObs(t, cfgA, metrics.New())

	const conns = 200
	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		ready    sync.WaitGroup
		sent     atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
	)
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	ready.Add(conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := gorilla.DefaultDialer.Dial(g.url("pub", "/live"), nil)
			ready.Done()
			if err != nil {
				fail(fmt.Errorf("conn %d: dial: %w", i, err))
				return
			}
			defer c.Close()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					// A clean close through the gateway: the backend's reply comes back.
					c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(1000, "done"), time.Now().Add(5*time.Second))
					c.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, _, err := c.ReadMessage(); !gorilla.IsCloseError(err, 1000) {
						fail(fmt.Errorf("conn %d: close: %v", i, err))
					}
					return
				default:
				}
				msg := fmt.Sprintf("%d-%d", i, seq)
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if err := c.WriteMessage(gorilla.TextMessage, []byte(msg)); err != nil {
					fail(fmt.Errorf("conn %d seq %d: write: %w", i, seq, err))
					return
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, got, err := c.ReadMessage()
				if err != nil {
					fail(fmt.Errorf("conn %d seq %d: read: %w", i, seq, err))
					return
				}
				// The connection started under cfgA: it stays on backend A whatever the reloads.
				if string(got) != "A:"+msg {
					fail(fmt.Errorf("conn %d: got %q, want %q", i, got, "A:"+msg))
					return
				}
				sent.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	ready.Wait()
	if n := failures.Load(); n > 0 {
		close(stop)
		wg.Wait()
		t.Fatalf("%d connections failed before the reloads: %v", n, firstErr.Load())
	}

	probe := func(path string) (string, int) {
		c, resp, err := gorilla.DefaultDialer.Dial(g.url("pub", path), nil)
		if err != nil {
			if resp != nil {
				return "", resp.StatusCode
			}
			t.Fatalf("probe %s: %v", path, err)
		}
		defer c.Close()
		c.WriteMessage(gorilla.TextMessage, []byte("probe"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("probe %s: %v", path, err)
		}
		return string(got), 101
	}
	current := "A"
	for i := range 20 {
		before := sent.Load()
		switch i % 3 {
		case 0, 2:
			next, src := "B", cfgB
			if current == "B" {
				next, src = "A", cfgA
			}
			if err := g.Reload(mustParse(t, src)); err != nil {
				t.Fatalf("reload %d: %v", i, err)
			}
			current = next
		case 1:
			// What wsgate run does with an invalid file: diagnostics, no Reload.
			if _, diags := config.Parse([]byte(invalid), "test.hcl"); !diags.HasErrors() {
				t.Fatal("the invalid configuration parsed")
			}
		}
		if got, _ := probe("/live"); got != current+":probe" {
			t.Fatalf("reload %d: a new /live connection got %q, want backend %s", i, got, current)
		}
		other := map[string]string{"A": "/only-b", "B": "/only-a"}[current]
		if _, st := probe(other); st != http.StatusNotFound {
			t.Fatalf("reload %d: %s (not in the %s configuration) answered %d, want 404", i, other, current, st)
		}
		if got, _ := probe("/only-" + strings.ToLower(current)); got != current+":probe" {
			t.Fatalf("reload %d: /only-%s got %q", i, strings.ToLower(current), got)
		}
		// Let traffic flow between reloads, and check it does.
		waitFor(t, "messages after a reload", func() bool { return sent.Load() > before+conns })
		if n := failures.Load(); n > 0 {
			break
		}
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d connections failed: %v", n, conns, firstErr.Load())
	}
	t.Logf("%d messages echoed in order over %d connections across 20 reloads", sent.Load(), conns)
	waitFor(t, "connections to end", func() bool { return g.ActiveConnections() == 0 })
}

// TestReloadKeepsLimitsOfOpenConnections: a connection keeps the limits it started with.
func TestReloadKeepsLimitsOfOpenConnections(t *testing.T) {
	b := newTaggedEcho(t, "A")
	cfg := func(max string) string {
		return `listen "pub" { address = "127.0.0.1:0" }` + opsLimits + fmt.Sprintf(`
route "/echo" {
  backend = "ws://%s/"
  limits { max_message_size = %q }
}`, b.addr(), max)
	}
	g := startGatewayObs(t, cfg("1KiB"), nil)
	old, _, err := gorilla.DefaultDialer.Dial(g.url("pub", "/echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := g.Reload(mustParse(t, cfg("1MiB"))); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 4096)
	fresh, _, err := gorilla.DefaultDialer.Dial(g.url("pub", "/echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	fresh.WriteMessage(gorilla.TextMessage, []byte(big))
	fresh.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := fresh.ReadMessage(); err != nil || string(got) != "A:"+big {
		t.Fatalf("new connection under the 1 MiB limit: %v", err)
	}
	old.WriteMessage(gorilla.TextMessage, []byte(big))
	old.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := old.ReadMessage(); !gorilla.IsCloseError(err, int(wsframe.CloseTooBig)) {
		t.Fatalf("old connection (1 KiB limit) got %v, want 1009", err)
	}
}

// opsFreeAddr returns a loopback address that was free a moment ago.
func opsFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestReloadMovesListener: a listener whose address changes is bound anew and the old socket
// closed, while the connection established through the old one keeps relaying. A bind that
// fails leaves everything as it was.
func TestReloadMovesListener(t *testing.T) {
	b := newTaggedEcho(t, "A")
	cfg := func(addr string) string {
		return fmt.Sprintf(`listen "pub" { address = %q }`, addr) + opsLimits +
			fmt.Sprintf(`route "/echo" { backend = "ws://%s/" }`, b.addr())
	}
	g := startGatewayObs(t, cfg("127.0.0.1:0"), nil)
	oldAddr := g.Addr("pub").String()
	c, _, err := gorilla.DefaultDialer.Dial("ws://"+oldAddr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(what string) {
		t.Helper()
		c.WriteMessage(gorilla.TextMessage, []byte(what))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, got, err := c.ReadMessage(); err != nil || string(got) != "A:"+what {
			t.Fatalf("%s: %q %v", what, got, err)
		}
	}
	echo("before")

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := g.Reload(mustParse(t, cfg(busy.Addr().String()))); err == nil {
		t.Fatal("reload onto a busy address succeeded")
	}
	if g.Addr("pub").String() != oldAddr {
		t.Fatal("a failed reload moved the listener")
	}
	echo("after failed reload")

	newAddr := opsFreeAddr(t)
	if err := g.Reload(mustParse(t, cfg(newAddr))); err != nil {
		t.Fatal(err)
	}
	if got := g.Addr("pub").String(); got != newAddr {
		t.Fatalf("listener at %s, want %s", got, newAddr)
	}
	echo("after move")
	if nc, err := net.DialTimeout("tcp", oldAddr, time.Second); err == nil {
		nc.Close()
		t.Fatalf("old address %s still accepts", oldAddr)
	}
	c2, _, err := gorilla.DefaultDialer.Dial("ws://"+newAddr+"/echo", nil)
	if err != nil {
		t.Fatalf("new address: %v", err)
	}
	c2.Close()
	echo("still alive")
}

// scrapeMetrics GETs /metrics over HTTP and parses the text format.
func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// metricValue returns the value of name's series with exactly the labels given ("k=v"), or
// -1 when there is none. Histograms give their sample count.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		for _, l := range m.Label {
			found := false
			for _, kv := range labels {
				if kv == l.GetName()+"="+l.GetValue() {
					found = true
				}
			}
			if !found {
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

// TestMetricsScenario runs a scripted scenario through a gateway with the metrics observer and
// asserts exact values on the admin /metrics, then the JSON access log lines.
func TestMetricsScenario(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	b := newBackend(t, func(b *testBackend) { b.protocols = []string{"chat.v1"} })
	m := metrics.New()
	g := startGatewayObs(t, `listen "pub" { address = "127.0.0.1:0" }`+opsLimits+
		fmt.Sprintf(`route "/echo" { backend = "ws://%s/ws" }`, b.addr()), m)
	adm := admin.New(admin.Options{Metrics: m.Handler(), Ready: g.Ready, Logger: slog.New(slog.DiscardHandler)})
	if err := adm.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	addr := g.Addr("pub").String()

	// 1. No route: 404. 2. A route without an upgrade: 426.
	if st := dialRaw(t, addr, "/nope").resp.StatusCode; st != 404 {
		t.Fatalf("/nope: %d", st)
	}
	if st := dialRaw(t, addr, "/echo", "NOUPGRADE").resp.StatusCode; st != 426 {
		t.Fatalf("/echo without upgrade: %d", st)
	}
	// 3. A clean session: 3 text messages of 5 bytes and a binary one of 10, echoed; the
	// client closes with 1000 "bye" and the backend's reply comes back.
	d := gorilla.Dialer{Subprotocols: []string{"chat.v1"}}
	c, _, err := d.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	clientAddr := c.LocalAddr().String()
	for _, msg := range []string{"hello", "world", "again"} {
		c.WriteMessage(gorilla.TextMessage, []byte(msg))
	}
	c.WriteMessage(gorilla.BinaryMessage, []byte("0123456789"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 4 {
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second))
	if _, _, err := c.ReadMessage(); !gorilla.IsCloseError(err, 1000) {
		t.Fatalf("close reply: %v", err)
	}
	c.Close()
	// 4. A protocol error: an unmasked client frame. The client gets 1002, the backend 1001
	// and answers it.
	rc := dialRaw(t, addr, "/echo")
	rc.write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("naked")))
	if code, _ := rc.readClose(); code != wsframe.CloseProtocolError {
		t.Fatalf("unmasked frame: client got %d", code)
	}
	rc.conn.Close()
	waitFor(t, "connections to end", func() bool { return g.ActiveConnections() == 0 })

	f := scrapeMetrics(t, "http://"+adm.Addr().String()+"/metrics")
	r := "route=/echo"
	c2b, b2c := "direction=client_to_backend", "direction=backend_to_client"
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wsgate_handshakes_total", []string{"route=", "status=404"}, 1},
		{"wsgate_handshakes_total", []string{r, "status=426"}, 1},
		{"wsgate_handshakes_total", []string{r, "status=101"}, 2},
		{"wsgate_backend_dial_duration_seconds", []string{r}, 2},
		{"wsgate_connections_active", []string{r}, 0},
		{"wsgate_frames_total", []string{r, c2b, "class=data"}, 4}, // the unmasked frame is refused unread
		{"wsgate_frames_total", []string{r, c2b, "class=control"}, 1},
		{"wsgate_frames_total", []string{r, b2c, "class=data"}, 4},
		{"wsgate_frames_total", []string{r, b2c, "class=control"}, 2}, // two close replies
		{"wsgate_bytes_total", []string{r, c2b}, 25},
		{"wsgate_bytes_total", []string{r, b2c}, 25},
		{"wsgate_messages_total", []string{r, c2b}, 4},
		{"wsgate_messages_total", []string{r, b2c}, 4},
		{"wsgate_close_received_total", []string{r, "side=client", "code=1000"}, 1},
		{"wsgate_close_received_total", []string{r, "side=client", "code=none"}, 1},
		{"wsgate_close_received_total", []string{r, "side=backend", "code=1000"}, 1},
		{"wsgate_close_received_total", []string{r, "side=backend", "code=1001"}, 1},
		{"wsgate_close_sent_total", []string{r, "side=client", "code=1000"}, 1},
		{"wsgate_close_sent_total", []string{r, "side=client", "code=1002"}, 1},
		{"wsgate_close_sent_total", []string{r, "side=backend", "code=1000"}, 1},
		{"wsgate_close_sent_total", []string{r, "side=backend", "code=1001"}, 1},
		{"wsgate_protocol_errors_total", []string{r, "side=client", "code=1002"}, 1},
		{"wsgate_connections_closed_total", []string{r, "closed_by=client"}, 1},
		{"wsgate_connections_closed_total", []string{r, "closed_by=gateway"}, 1},
		{"wsgate_connection_duration_seconds", []string{r}, 2},
	}
	for _, c := range checks {
		if got := metricValue(f, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// No other series of these families: nothing counted twice or under another label.
	for name, n := range map[string]int{"wsgate_handshakes_total": 3, "wsgate_close_sent_total": 4, "wsgate_close_received_total": 4, "wsgate_protocol_errors_total": 1} {
		if got := len(f[name].GetMetric()); got != n {
			t.Errorf("%s has %d series, want %d", name, got, n)
		}
	}

	// The access log: one JSON line per connection at close, one per refused handshake.
	var conns, refused []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(g.log.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		switch e["msg"] {
		case "connection":
			conns = append(conns, e)
		case "handshake refused":
			refused = append(refused, e)
		}
	}
	if len(conns) != 2 || len(refused) != 2 {
		t.Fatalf("%d connection lines and %d refusals, want 2 and 2:\n%s", len(conns), len(refused), g.log.String())
	}
	var clean map[string]any
	for _, e := range conns {
		if e["closed_by"] == "client" {
			clean = e
		}
	}
	if clean == nil {
		t.Fatalf("no line for the clean session: %v", conns)
	}
	want := map[string]any{
		"level": "INFO", "client": clientAddr, "client_ip": "127.0.0.1", "listener": "pub",
		"route": "/echo", "backend": "ws://" + b.addr() + "/ws/echo", "subprotocol": "chat.v1",
		"client_frames": 5.0, "client_bytes": 25.0, "backend_frames": 5.0, "backend_bytes": 25.0,
		"client_close_received": 1000.0, "client_close_received_reason": "bye",
		"client_close_sent": 1000.0, "client_close_sent_reason": "bye",
		"backend_close_received": 1000.0, "backend_close_received_reason": "bye",
		"backend_close_sent": 1000.0, "backend_close_sent_reason": "bye",
		"closed_by": "client",
	}
	for k, v := range want {
		if clean[k] != v {
			t.Errorf("access log %s = %#v, want %#v", k, clean[k], v)
		}
	}
	if d, ok := clean["duration"].(float64); !ok || d <= 0 {
		t.Errorf("access log duration = %#v", clean["duration"])
	}
	if _, ok := clean["time"].(string); !ok {
		t.Errorf("access log has no time: %v", clean)
	}
	var bad map[string]any
	for _, e := range conns {
		if e["closed_by"] == "gateway" {
			bad = e
		}
	}
	if bad == nil || bad["client_close_sent"] != 1002.0 || bad["backend_close_sent"] != 1001.0 || bad["client_frames"] != 0.0 {
		t.Errorf("protocol-error connection line: %v", bad)
	}
	if refused[0]["status"] != 404.0 || refused[0]["path"] != "/nope" || refused[0]["route"] != "" ||
		!strings.HasPrefix(refused[0]["client"].(string), "127.0.0.1:") {
		t.Errorf("404 line: %v", refused[0])
	}
	if refused[1]["status"] != 426.0 || refused[1]["route"] != "/echo" {
		t.Errorf("426 line: %v", refused[1])
	}
}

// rawEchoBackend accepts WebSocket connections and answers every client frame of exactly
// frameLen bytes (masked, as the gateway writes them) with reply, without parsing: the
// cheapest possible backend, so a benchmark measures the gateway.
func rawEchoBackend(tb testing.TB, frameLen int, reply []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
					wsframe.AcceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
				buf := make([]byte, frameLen)
				for {
					if _, err := io.ReadFull(br, buf); err != nil {
						return
					}
					if _, err := c.Write(reply); err != nil {
						return
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// BenchmarkRelayObserver relays 64-byte messages end to end over loopback (raw client,
// gateway, raw backend), with no observer and with the metrics observer. One op is a round
// trip: two relayed frames. allocs/frame counts every allocation in the process (client,
// gateway and backend) and must be 0 with the metrics observer too.
func BenchmarkRelayObserver(b *testing.B) {
	for _, tc := range []struct {
		name string
		obs  func() gateway.Observer
	}{
		{"observer=nil", func() gateway.Observer { return nil }},
		{"observer=metrics", func() gateway.Observer { return metrics.New() }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 64
			payload := []byte(strings.Repeat("m", n))
			reply := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, payload)
			req := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}}, payload)
			backend := rawEchoBackend(b, len(req), reply)
			g := startGatewayObs(b, `listen "pub" { address = "127.0.0.1:0" }`+opsLimits+
				fmt.Sprintf("route \"/bench\" {\n backend = \"ws://%s/\"\n limits { ping_interval = \"0\" }\n}\n", backend), tc.obs())
			c, err := net.Dial("tcp", g.Addr("pub").String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET /bench HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 101 {
				b.Fatalf("handshake: %v %v", resp, err)
			}
			in := make([]byte, len(reply))
			roundTrip := func() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(br, in); err != nil {
					b.Fatal(err)
				}
			}
			for range 100 { // warm the pools
				roundTrip()
			}
			b.ReportAllocs()
			b.SetBytes(2 * n)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for range b.N {
				roundTrip()
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(2*b.N), "allocs/frame")
		})
	}
}
