package main

// Operations tests against the built binary (issue 6): drain on SIGTERM, a second signal,
// SIGHUP and POST /reload, the admin endpoints.

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/wsframe"
)

// wsgateProc is a running `wsgate run` with its JSON log lines.
type wsgateProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed

	mu    sync.Mutex
	lines []map[string]any
	raw   []string
}

func startWsgate(t *testing.T, bin, cfgPath string) *wsgateProc {
	t.Helper()
	p := &wsgateProc{t: t, cmd: exec.Command(bin, "run", "-config", cfgPath), done: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e map[string]any
			json.Unmarshal(sc.Bytes(), &e) // a non-JSON line shows up as nil and fails waitLog
			p.mu.Lock()
			p.lines = append(p.lines, e)
			p.raw = append(p.raw, sc.Text())
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("wsgate log:\n%s", p.log())
		}
	})
	return p
}

func (p *wsgateProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.raw, "\n")
}

// waitLog returns the first log line (from index from on) that has msg and every k=v of
// attrs, failing after 10 s. It also returns the index after it.
func (p *wsgateProc) waitLog(from int, msg string, attrs ...string) (map[string]any, int) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		lines := p.lines
		p.mu.Unlock()
	next:
		for i := from; i < len(lines); i++ {
			e := lines[i]
			if e == nil {
				p.t.Fatalf("log line is not JSON: %q", p.raw[i])
			}
			if e["msg"] != msg {
				continue
			}
			for _, kv := range attrs {
				k, v, _ := strings.Cut(kv, "=")
				if fmt.Sprint(e[k]) != v {
					continue next
				}
			}
			return e, i + 1
		}
		select {
		case <-p.done:
			p.t.Fatalf("wsgate exited (%v) without logging %q %v", p.err, msg, attrs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("no log line %q %v", msg, attrs)
	return nil, 0
}

// addrs waits for the startup lines and returns the public listener's and the admin address.
func (p *wsgateProc) addrs() (pub, adm string) {
	p.t.Helper()
	e, _ := p.waitLog(0, "listening", "listener=pub")
	a, _ := p.waitLog(0, "admin listening")
	return e["address"].(string), a["address"].(string)
}

// exit waits up to d for the process to exit and returns its exit code.
func (p *wsgateProc) exit(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("wsgate still running after %v", d)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	p.t.Fatalf("wait: %v", p.err)
	return -1
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func httpPost(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// closeRecorder is a gorilla echo backend that counts the close codes it receives.
type closeRecorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[int]int
}

func newCloseRecorder(t *testing.T) *closeRecorder {
	r := &closeRecorder{got: map[int]int{}}
	up := gorilla.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		c, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetCloseHandler(func(code int, text string) error {
			r.mu.Lock()
			r.got[code]++
			r.mu.Unlock()
			return c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(code, text), time.Now().Add(time.Second))
		})
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if c.WriteMessage(typ, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		r.srv.CloseClientConnections()
		r.srv.Close()
	})
	return r
}

func (r *closeRecorder) addr() string { return strings.TrimPrefix(r.srv.URL, "http://") }

func (r *closeRecorder) count(code int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[code]
}

// rawUpgrade completes a WebSocket handshake over TCP and then does nothing: a client that
// will never answer the close.
func rawUpgrade(t *testing.T, addr, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", path, addr, key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("raw handshake: %v %v", resp, err)
	}
	return c, br
}

func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const opsLimits = `
limits {
  messages_per_second          = 0
  bytes_per_second             = 0
  handshakes_per_ip_per_second = 0
  max_connections_per_ip       = 0
  close_timeout                = "1m"   # longer than drain_timeout: the drain cuts, not this
}
`

// TestDrainBinary: SIGTERM with 100 live connections and one client that ignores the close.
// Every client and backend gets 1001 "going away" at once, /readyz answers 503 during the
// drain, the ignoring client is cut at drain_timeout, and the process exits 0.
func TestDrainBinary(t *testing.T) {
	bin := buildBinary(t)
	backend := newCloseRecorder(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "wsgate.hcl")
	const drainTimeout = 3 * time.Second
	writeConfig(t, cfgPath, fmt.Sprintf(`
drain_timeout = "3s"
listen "pub" { address = "127.0.0.1:0" }
admin { address = "127.0.0.1:0" }
%s
route "/echo" { backend = "ws://%s/" }
`, opsLimits, backend.addr()))
	p := startWsgate(t, bin, cfgPath)
	pub, adm := p.addrs()
	if st, _ := httpGet(t, "http://"+adm+"/readyz"); st != 200 {
		t.Fatalf("/readyz before the drain: %d", st)
	}
	if st, _ := httpGet(t, "http://"+adm+"/healthz"); st != 200 {
		t.Fatalf("/healthz: %d", st)
	}

	const n = 100
	clients := make([]*gorilla.Conn, n)
	for i := range clients {
		c, _, err := gorilla.DefaultDialer.Dial("ws://"+pub+"/echo", nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		defer c.Close()
		c.WriteMessage(gorilla.TextMessage, []byte(fmt.Sprint("hi ", i)))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != fmt.Sprint("hi ", i) {
			t.Fatalf("client %d echo: %q %v", i, msg, err)
		}
		clients[i] = c
	}
	deaf, deafBr := rawUpgrade(t, pub, "/echo")

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(drainTimeout))
			_, _, err := c.ReadMessage()
			var ce *gorilla.CloseError
			if !asCloseError(err, &ce) || ce.Code != 1001 || ce.Text != "going away" {
				errs <- fmt.Errorf("client %d got %v, want 1001 going away", i, err)
			}
		}()
	}
	// /readyz turns 503 while the drain waits for the deaf client.
	sawNotReady := false
	for time.Since(start) < drainTimeout && !sawNotReady {
		if st, _ := httpGet(t, "http://"+adm+"/readyz"); st == 503 {
			sawNotReady = true
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !sawNotReady {
		t.Error("/readyz never answered 503 during the drain")
	}
	if got := time.Since(start); got >= drainTimeout {
		t.Errorf("clients got their 1001 after %v, want well within drain_timeout", got)
	}
	for deadline := time.Now().Add(drainTimeout); backend.count(1001) < n+1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := backend.count(1001); got != n+1 {
		t.Errorf("backends received %d closes with 1001, want %d (%v)", got, n+1, backend.got)
	}

	code := p.exit(drainTimeout + 5*time.Second)
	elapsed := time.Since(start)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if elapsed < drainTimeout-100*time.Millisecond || elapsed > drainTimeout+2*time.Second {
		t.Errorf("exited after %v, want about drain_timeout (%v): the deaf client holds the drain until then", elapsed, drainTimeout)
	}
	p.waitLog(0, "drain ended", "err=drain timeout: 1 connections cut")
	// The deaf client was sent 1001 too, then cut.
	deaf.SetReadDeadline(time.Now().Add(2 * time.Second))
	var hb [wsframe.MaxHeaderSize]byte
	h, err := wsframe.ReadHeader(deafBr, &hb)
	if err != nil || h.Opcode != wsframe.OpClose {
		t.Fatalf("deaf client: %v %v, want a close frame", h, err)
	}
	payload := make([]byte, h.Length)
	io.ReadFull(deafBr, payload)
	if code, _, _ := wsframe.ParseClosePayload(payload); code != 1001 {
		t.Errorf("deaf client got close %d", code)
	}
	if _, err := deafBr.ReadByte(); err == nil {
		t.Error("deaf client's connection still open after the exit")
	}
}

func asCloseError(err error, ce **gorilla.CloseError) bool {
	e, ok := err.(*gorilla.CloseError)
	*ce = e
	return ok
}

// TestSecondSignalBinary: a second SIGTERM during a drain exits at once (code 1).
func TestSecondSignalBinary(t *testing.T) {
	bin := buildBinary(t)
	backend := newCloseRecorder(t)
	cfgPath := filepath.Join(t.TempDir(), "wsgate.hcl")
	writeConfig(t, cfgPath, fmt.Sprintf(`
drain_timeout = "30s"
listen "pub" { address = "127.0.0.1:0" }
admin { address = "127.0.0.1:0" }
%s
route "/echo" { backend = "ws://%s/" }
`, opsLimits, backend.addr()))
	p := startWsgate(t, bin, cfgPath)
	pub, adm := p.addrs()
	rawUpgrade(t, pub, "/echo") // never answers the close: the drain would last 30 s
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog(0, "draining")
	if st, _ := httpGet(t, "http://"+adm+"/readyz"); st != 503 {
		t.Fatalf("/readyz during the drain: %d", st)
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exit(3 * time.Second); code != 1 {
		t.Errorf("exit code %d after a second signal, want 1", code)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second signal took %v to exit", d)
	}
	p.waitLog(0, "second signal, exiting now")
}

// TestReloadBinary: SIGHUP with a valid file switches routes at once and keeps open
// connections; an invalid file keeps the old configuration and logs HCL diagnostics with
// file:line; POST /reload answers 400 with them; the admin listener moves with its block.
func TestReloadBinary(t *testing.T) {
	bin := buildBinary(t)
	backend := newCloseRecorder(t)
	cfgPath := filepath.Join(t.TempDir(), "wsgate.hcl")
	head := fmt.Sprintf("listen \"pub\" { address = \"127.0.0.1:0\" }\n%s\n", opsLimits)
	cfg1 := head + "admin { address = \"127.0.0.1:0\" }\n" + fmt.Sprintf("route \"/a\" { backend = \"ws://%s/\" }\n", backend.addr())
	cfg2 := cfg1 + fmt.Sprintf("route \"/b\" { backend = \"ws://%s/\" }\n", backend.addr())
	writeConfig(t, cfgPath, cfg1)
	p := startWsgate(t, bin, cfgPath)
	pub, adm := p.addrs()

	echo := func(c *gorilla.Conn, msg string) {
		t.Helper()
		c.WriteMessage(gorilla.TextMessage, []byte(msg))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
			t.Fatalf("echo %q: %q %v", msg, got, err)
		}
	}
	dial := func(path string) (*gorilla.Conn, int) {
		t.Helper()
		c, resp, err := gorilla.DefaultDialer.Dial("ws://"+pub+path, nil)
		if err != nil {
			if resp != nil {
				return nil, resp.StatusCode
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, 101
	}
	held, _ := dial("/a")
	echo(held, "before")
	if _, st := dial("/b"); st != 404 {
		t.Fatalf("/b before the reload: %d", st)
	}

	// A valid file: /b works at once, the open connection is untouched.
	writeConfig(t, cfgPath, cfg2)
	p.cmd.Process.Signal(syscall.SIGHUP)
	sum := sha256.Sum256([]byte(cfg2))
	_, at := p.waitLog(0, "configuration reloaded", "hash="+hex.EncodeToString(sum[:]))
	b, st := dial("/b")
	if st != 101 {
		t.Fatalf("/b after the reload: %d", st)
	}
	echo(b, "new route")
	echo(held, "after reload")

	// An invalid file (line 6): the old configuration stays; the log has the diagnostics.
	writeConfig(t, cfgPath, cfg2+"route \"/c\" {\n  backend = \"http://nope\"\n}\n")
	badLine := strings.Count(cfg2, "\n") + 2
	p.cmd.Process.Signal(syscall.SIGHUP)
	e, _ := p.waitLog(at, "reload failed: invalid configuration, keeping the old one")
	where := fmt.Sprintf("%s:%d,", cfgPath, badLine)
	if errs := fmt.Sprint(e["errors"]); !strings.Contains(errs, where) {
		t.Errorf("log errors %q lack %q", errs, where)
	}
	diag, _ := e["diagnostics"].(string)
	if !strings.Contains(diag, fmt.Sprintf("on %s line %d", cfgPath, badLine)) || !strings.Contains(diag, `backend = "http://nope"`) {
		t.Errorf("log diagnostics lack HCL's file/line and snippet:\n%s", diag)
	}
	echo(b, "still there")
	echo(held, "still there")
	if _, st := dial("/c"); st != 404 {
		t.Errorf("/c of the invalid file answers %d", st)
	}
	st, body := httpPost(t, "http://"+adm+"/reload")
	if st != 400 || !strings.Contains(body, fmt.Sprintf("on %s line %d", cfgPath, badLine)) {
		t.Errorf("POST /reload with an invalid file: %d\n%s", st, body)
	}
	if st, _ := httpGet(t, "http://"+adm+"/reload"); st != 405 {
		t.Errorf("GET /reload: %d, want 405", st)
	}

	// Metrics: reload counts by result and the running configuration's hash.
	_, text := httpGet(t, "http://"+adm+"/metrics")
	for _, want := range []string{
		`wsgate_config_reloads_total{result="success"} 1`,
		`wsgate_config_reloads_total{result="failure"} 2`,
		fmt.Sprintf(`wsgate_config_info{hash="%x"} 1`, sum),
		`wsgate_handshakes_total{route="/b",status="101"} 1`,
		`wsgate_handshakes_total{route="",status="404"} 2`,
		`wsgate_memory_trims_total 0`, // the memory trimmer runs; no burst here to trim after
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The admin block moves: POST /reload on the old address answers, then the new one
	// serves and the old one is gone.
	newAdm := freeAddr(t)
	writeConfig(t, cfgPath, strings.Replace(cfg2, `admin { address = "127.0.0.1:0" }`, fmt.Sprintf("admin { address = %q }", newAdm), 1))
	if st, body := httpPost(t, "http://"+adm+"/reload"); st != 200 {
		t.Fatalf("POST /reload: %d %s", st, body)
	}
	if st, _ := httpGet(t, "http://"+newAdm+"/healthz"); st != 200 {
		t.Errorf("new admin address: %d", st)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", adm)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("old admin address %s still accepts", adm)
		}
		time.Sleep(20 * time.Millisecond)
	}
	echo(held, "after admin move")

	// The access log line of the held connection, written at its close.
	held.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(1000, "done"), time.Now().Add(time.Second))
	held.ReadMessage()
	echo(b, "last")
	b.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(1000, "done"), time.Now().Add(time.Second))
	b.ReadMessage()
	line, _ := p.waitLog(0, "connection", "route=/a", "closed_by=client")
	if line["client_close_received"] != 1000.0 || line["client_frames"] != 5.0 || line["backend_frames"] != 5.0 {
		t.Errorf("access log line: %v", line)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
