// Command soak runs wsgate in-process for a long time under light mixed traffic with periodic
// backend restarts and gateway reloads, and prints the process's RSS, heap and goroutines over
// time as a small table. It is not part of CI:
//
//	go run ./bench/soak -d 30m [-clients 40] [-rate 10] [-churn 5] [-every 1m]
//
// Traffic (all on loopback): -clients long-lived clients each send -rate sequenced text
// messages per second and check every echo (order, content); -churn short connections per
// second open, echo one binary message and close. Every -restart the echo backend is stopped
// (its connections cut: clients get 1014 and reconnect) and started again on the same port;
// every -reload the gateway reloads its configuration. A long-lived client that loses or
// reorders a message, or that is closed with anything but 1014 during a restart window, counts
// as an error. At the end the gateway is drained and the process exits 1 if there were errors
// or if goroutines did not return to their starting level.
//
// Three helper modes serve the churn test (gateway/churn_test.go), which needs processes
// without the race detector (its limit is 8,128 goroutines per process) and with their own
// file descriptor budgets:
//
//	soak serve -config FILE   a gateway; prints "gateway ADDR stats ADDR"; GET /stats on the
//	                          stats address returns goroutines, heap (after a GC), fds, RSS
//	soak echo                 a gorilla echo backend; prints "echo ADDR"
//	soak churn -url URL ...   the hostile connection generator; prints one JSON summary line
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/gateway"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "serve":
			serveMain(os.Args[2:])
			return
		case "echo":
			echoMain(os.Args[2:])
			return
		case "churn":
			churnMain(os.Args[2:])
			return
		}
	}
	dur := flag.Duration("d", 30*time.Minute, "total duration")
	clients := flag.Int("clients", 40, "long-lived sequenced echo clients")
	rate := flag.Int("rate", 10, "messages per second per long-lived client")
	churn := flag.Int("churn", 5, "short connections per second")
	every := flag.Duration("every", time.Minute, "table row interval")
	restart := flag.Duration("restart", 2*time.Minute, "backend restart interval")
	reload := flag.Duration("reload", 45*time.Second, "gateway reload interval")
	flag.Parse()
	if err := run(*dur, *clients, *rate, *churn, *every, *restart, *reload); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type counters struct {
	sent, echoed, reconnects, churned, backendCuts, reloads atomic.Int64
	errors                                                  atomic.Int64
	lastErr                                                 atomic.Value
}

func (c *counters) fail(format string, args ...any) {
	c.errors.Add(1)
	c.lastErr.Store(fmt.Sprintf(format, args...))
}

func run(dur time.Duration, nClients, rate, churn int, every, restartEvery, reloadEvery time.Duration) error {
	var ctr counters
	be, err := startBackend("127.0.0.1:0")
	if err != nil {
		return err
	}
	backendAddr := be.addr
	conf := func(gen int) string {
		return fmt.Sprintf(`
listen "pub" { address = "127.0.0.1:0" }
limits {
  messages_per_second = 0
  bytes_per_second = 0
  max_connections_per_ip = 0
  handshakes_per_ip_per_second = 0
  ping_interval = "5s"
  pong_timeout = "5s"
  close_timeout = "1s"
  write_timeout = "5s"
}
# generation %d
route "/echo" {
  backend = "ws://%s/"
  validate_utf8 = %v
}
`, gen, backendAddr, gen%2 == 0)
	}
	cfg, diags := config.Parse([]byte(conf(0)), "soak.hcl")
	if diags.HasErrors() {
		return errors.New(diags.Error())
	}
	logf, err := os.CreateTemp("", "soak-gateway-*.log")
	if err != nil {
		return err
	}
	defer logf.Close()
	g := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err := g.Start(); err != nil {
		return err
	}
	url := "ws://" + g.Addr("pub").String() + "/echo"
	fmt.Printf("soak: %v, %d clients x %d msg/s, %d churn/s, backend restart every %v, reload every %v; gateway log %s\n",
		dur, nClients, rate, churn, restartEvery, reloadEvery, logf.Name())

	runtime.GC()
	baseG := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var restarting atomic.Bool // a backend restart is in progress (1014 expected)
	var wg sync.WaitGroup
	for i := range nClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			longClient(ctx, i, url, rate, &ctr, &restarting)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if churn <= 0 {
			return
		}
		t := time.NewTicker(time.Second / time.Duration(churn))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				wg.Add(1)
				go func() {
					defer wg.Done()
					shortClient(url, &ctr, &restarting)
				}()
			}
		}
	}()

	fmt.Printf("\n| elapsed | RSS MiB | heap MiB | goroutines | gateway conns | echoed | reconnects | churned | backend restarts | reloads | errors |\n")
	fmt.Printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	row := func(el time.Duration) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("| %v | %.1f | %.1f | %d | %d | %d | %d | %d | %d | %d | %d |\n",
			el.Round(time.Second), float64(rssKiB())/1024, float64(ms.HeapInuse)/(1<<20), runtime.NumGoroutine(),
			g.ActiveConnections(), ctr.echoed.Load(), ctr.reconnects.Load(), ctr.churned.Load(),
			ctr.backendCuts.Load(), ctr.reloads.Load(), ctr.errors.Load())
	}
	start := time.Now()
	row(0)
	tRow := time.NewTicker(every)
	tRestart := time.NewTicker(restartEvery)
	tReload := time.NewTicker(reloadEvery)
	gen := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tRow.C:
			row(time.Since(start))
		case <-tReload.C:
			gen++
			c, diags := config.Parse([]byte(conf(gen)), "soak.hcl")
			if diags.HasErrors() {
				ctr.fail("reload config: %s", diags.Error())
				continue
			}
			// The listener address text is unchanged ("127.0.0.1:0"), so it is not rebound.
			if err := g.Reload(c); err != nil {
				ctr.fail("reload: %v", err)
				continue
			}
			ctr.reloads.Add(1)
		case <-tRestart.C:
			restarting.Store(true)
			be.stop()
			ctr.backendCuts.Add(1)
			time.Sleep(500 * time.Millisecond)
			nb, err := startBackend(backendAddr)
			for err != nil && ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond)
				nb, err = startBackend(backendAddr)
			}
			if nb != nil {
				be = nb
			}
			time.Sleep(2 * time.Second) // clients reconnect
			restarting.Store(false)
		}
	}
	tRow.Stop()
	tRestart.Stop()
	tReload.Stop()
	wg.Wait()
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	g.Drain(dctx)
	dcancel()
	be.stop()
	time.Sleep(time.Second)
	runtime.GC()
	row(time.Since(start))
	endG := runtime.NumGoroutine()
	fmt.Printf("\nsent %d, echoed %d, goroutines at start %d, after drain %d, errors %d\n",
		ctr.sent.Load(), ctr.echoed.Load(), baseG, endG, ctr.errors.Load())
	if e := ctr.lastErr.Load(); e != nil {
		fmt.Printf("last error: %s\n", e)
	}
	if ctr.errors.Load() > 0 {
		return fmt.Errorf("%d errors", ctr.errors.Load())
	}
	if endG > baseG+5 {
		return fmt.Errorf("goroutines %d after drain, %d at start", endG, baseG)
	}
	return nil
}

// longClient keeps one connection open and sends sequenced messages, checking every echo.
func longClient(ctx context.Context, id int, url string, rate int, ctr *counters, restarting *atomic.Bool) {
	first := true
	for ctx.Err() == nil {
		if !first {
			ctr.reconnects.Add(1)
			time.Sleep(200 * time.Millisecond)
		}
		first = false
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		c, _, err := d.DialContext(ctx, url, nil)
		if err != nil {
			if ctx.Err() == nil && !restarting.Load() {
				ctr.fail("client %d dial: %v", id, err)
			}
			continue
		}
		sessionErr := session(ctx, c, id, rate, ctr)
		c.Close()
		if sessionErr == nil || ctx.Err() != nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(sessionErr, &ce) && ce.Code == 1014 && restarting.Load() {
			continue // the backend restarted: expected
		}
		if restarting.Load() {
			continue
		}
		ctr.fail("client %d: %v", id, sessionErr)
	}
}

// session runs one connection: a writer sends seq numbers, the reader checks they come back
// in order. It returns nil when ctx ends (after a normal close).
func session(ctx context.Context, c *websocket.Conn, id, rate int, ctr *counters) error {
	readErr := make(chan error, 1)
	var next atomic.Int64 // next expected echo
	go func() {
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			want := next.Load()
			prefix := "c" + strconv.Itoa(id) + "-" + strconv.FormatInt(want, 10) + "-"
			if !strings.HasPrefix(string(msg), prefix) {
				readErr <- fmt.Errorf("echo %q, want prefix %q", truncate(string(msg), 40), prefix)
				return
			}
			next.Add(1)
			ctr.echoed.Add(1)
		}
	}()
	t := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer t.Stop()
	pad := strings.Repeat("x", 64+id*16)
	for seq := int64(0); ; seq++ {
		select {
		case err := <-readErr:
			return err
		case <-ctx.Done():
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second))
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			<-readErr
			return nil
		case <-t.C:
		}
		msg := "c" + strconv.Itoa(id) + "-" + strconv.FormatInt(seq, 10) + "-" + pad
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			select {
			case rerr := <-readErr:
				return rerr
			case <-time.After(2 * time.Second):
				return err
			}
		}
		ctr.sent.Add(1)
	}
}

// shortClient connects, echoes one binary message, and closes.
func shortClient(url string, ctr *counters, restarting *atomic.Bool) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		if !restarting.Load() {
			ctr.fail("churn dial: %v", err)
		}
		return
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg := make([]byte, 1024)
	if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		if !restarting.Load() {
			ctr.fail("churn write: %v", err)
		}
		return
	}
	if _, got, err := c.ReadMessage(); err != nil || len(got) != len(msg) {
		if !restarting.Load() {
			ctr.fail("churn echo: %d bytes, %v", len(got), err)
		}
		return
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	c.ReadMessage() // the close reply
	ctr.churned.Add(1)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// backend is a restartable gorilla echo server.
type backend struct {
	addr string
	srv  *http.Server
	mu   sync.Mutex
	conn map[*websocket.Conn]struct{}
	wg   sync.WaitGroup
}

func startBackend(addr string) (*backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &backend{addr: ln.Addr().String(), conn: make(map[*websocket.Conn]struct{})}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		b.wg.Add(1)
		defer b.wg.Done()
		b.mu.Lock()
		b.conn[c] = struct{}{}
		b.mu.Unlock()
		defer func() {
			b.mu.Lock()
			delete(b.conn, c)
			b.mu.Unlock()
			c.Close()
		}()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	})}
	go b.srv.Serve(ln)
	return b, nil
}

// stop closes the listener and cuts every connection without a close frame.
func (b *backend) stop() {
	b.srv.Close()
	b.mu.Lock()
	for c := range b.conn {
		c.NetConn().Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// rssKiB reads VmRSS from /proc/self/status.
func rssKiB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
