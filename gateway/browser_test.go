package gateway_test

// A real browser against the gateway (TestACMEEndToEnd/browser): headless Chromium (Debian's /usr/bin/chromium, driven
// with chromedp) opens wss://gw.test:PORT/echo on a gateway whose certificate Pebble issued,
// and echoes a message. Chromium trusts the certificate only through
// --ignore-certificate-errors-spki-list with the hash of Pebble's intermediate; a wrong hash
// must make the connection fail.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const chromiumPath = "/usr/bin/chromium"

// browserPage opens the WebSocket given in ?ws=, sends ?msg= once open, and reports progress
// in the DOM: #state is "connecting", then "echoed" (the reply is in #echo) or
// "failed:<close code>"; #close gets the close code either way.
const browserPage = `<!doctype html>
<meta charset="utf-8">
<title>wsgate browser test</title>
<pre id="state">connecting</pre>
<pre id="echo"></pre>
<pre id="close"></pre>
<script>
const q = new URLSearchParams(location.search);
const $ = id => document.getElementById(id);
const ws = new WebSocket(q.get('ws'));
let echoed = false;
ws.onopen = () => ws.send(q.get('msg'));
ws.onmessage = e => {
  $('echo').textContent = e.data;
  echoed = true;
  $('state').textContent = 'echoed';
  ws.close(1000, 'browser done');
};
ws.onclose = e => {
  $('close').textContent = String(e.code);
  if (!echoed) $('state').textContent = 'failed:' + e.code;
};
</script>
`

// syncBuffer collects Chromium's output for failure messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// browserResult is the page's final DOM state.
type browserResult struct {
	state, echo, close string
}

// runBrowser starts a fresh headless Chromium trusting spki, loads pageURL, waits (bounded)
// until the page reached a final state, reads the DOM and kills Chromium; it checks that no
// process of that Chromium is left.
func runBrowser(t *testing.T, spki, pageURL string) browserResult {
	t.Helper()
	userDir := t.TempDir()
	out := &syncBuffer{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(userDir),
		chromedp.Flag("host-resolver-rules", "MAP "+acmeHost+" 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors-spki-list", spki),
		chromedp.CombinedOutput(out),
	}

	// The whole browser session, start to kill, is bounded.
	sessionCtx, cancelSession := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancelSession()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(sessionCtx, opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	start := time.Now()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancelCtx()
		cancelAlloc() // kills Chromium and waits for it
	}
	defer stop()
	fail := func(format string, args ...any) {
		t.Helper()
		stop()
		t.Fatalf("%s\nchromium output:\n%s", fmt.Sprintf(format, args...), out.String())
	}

	// The first Run starts Chromium, which lives as long as that Run's context: ctx itself
	// (bounded by sessionCtx), not one of the shorter step contexts below.
	if err := chromedp.Do(ctx); err != nil {
		fail("starting chromium: %v", err)
	}
	navCtx, cancelNav := context.WithTimeout(ctx, 30*time.Second)
	defer cancelNav()
	if err := chromedp.Do(navCtx, chromedp.Navigate(pageURL)); err != nil {
		fail("navigate: %v", err)
	}
	waitCtx, cancelWait := context.WithTimeout(ctx, 20*time.Second)
	defer cancelWait()
	if _, err := chromedp.Run(waitCtx, chromedp.Poll[bool](
		`document.getElementById('close').textContent !== ''`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		stCtx, cancelSt := context.WithTimeout(ctx, 5*time.Second)
		st, _ := chromedp.Run(stCtx, chromedp.Evaluate[string](`document.getElementById('state').textContent`))
		cancelSt()
		fail("page did not finish (state %q): %v", st, err)
	}
	readCtx, cancelRead := context.WithTimeout(ctx, 10*time.Second)
	defer cancelRead()
	dom, err := chromedp.Run(readCtx, chromedp.Evaluate[map[string]string](`({
		state: document.getElementById('state').textContent,
		echo:  document.getElementById('echo').textContent,
		close: document.getElementById('close').textContent,
	})`))
	if err != nil {
		fail("reading the DOM: %v", err)
	}
	res := browserResult{state: dom["state"], echo: dom["echo"], close: dom["close"]}
	t.Logf("chromium: page %+v after %v", res, time.Since(start).Round(time.Millisecond))

	stop()
	assertNoProcessUses(t, userDir)
	return res
}

// assertNoProcessUses fails if a process still has dir on its command line (a Chromium
// child that outlived the kill), waiting up to 5 s for them to go.
func assertNoProcessUses(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat("/proc/self/cmdline"); err != nil {
		return // not Linux
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err == nil && bytes.Contains(b, []byte(dir)) {
				left = append(left, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Chromium processes left running:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testBrowser (a subtest of TestACMEEndToEnd, which issued the certificates): Chromium
// completes a wss echo through the gateway's "alpn" listener with the Pebble-issued
// certificate, and refuses the certificate when told to trust another key.
func testBrowser(t *testing.T, g *acmeGateway) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (install Debian's chromium: apt-get install -y chromium); skipped outside CI", chromiumPath)
		}
		t.Fatalf("CI is set but %s is missing: %v (.ci/run installs it)", chromiumPath, err)
	}
	l := g.alpn

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, browserPage)
	}))
	defer page.Close()
	pageURL := func(msg string) string {
		return page.URL + "/?" + url.Values{"ws": {l.wssURL("/echo")}, "msg": {msg}}.Encode()
	}

	t.Run("trusted", func(t *testing.T) {
		const msg = "hello from chromium ✓"
		res := runBrowser(t, l.pebble.IntermediateSPKIHash(), pageURL(msg))
		if res.state != "echoed" || res.echo != msg {
			t.Fatalf("page state %q echo %q, want echoed %q", res.state, res.echo, msg)
		}
		if res.close != "1000" {
			t.Errorf("close code seen by the page = %s, want 1000", res.close)
		}
		req := g.backend.next(t, "request").request
		if p := req.Header.Get("X-Forwarded-Proto"); p != "https" {
			t.Errorf("X-Forwarded-Proto = %q, want https", p)
		}
		if o := req.Header.Get("Origin"); o != page.URL {
			t.Errorf("Origin at the backend = %q, want %q", o, page.URL)
		}
		if e := g.backend.next(t, "message"); string(e.data) != msg {
			t.Errorf("backend got %q, want %q", e.data, msg)
		}
		if e := g.backend.next(t, "close"); e.code != 1000 || e.reason != "browser done" {
			t.Errorf("backend close %d %q, want 1000 \"browser done\"", e.code, e.reason)
		}
	})

	t.Run("wrong SPKI hash", func(t *testing.T) {
		sum := sha256.Sum256([]byte("not Pebble's intermediate"))
		before := strings.Count(g.log.String(), "tls handshake failed")
		res := runBrowser(t, base64.StdEncoding.EncodeToString(sum[:]), pageURL("must not arrive"))
		if res.state != "failed:1006" || res.echo != "" {
			t.Fatalf("page state %q echo %q, want failed:1006 and no echo", res.state, res.echo)
		}
		// It failed where it should: Chromium rejected the certificate during the handshake.
		if strings.Count(g.log.String(), "tls handshake failed") == before {
			t.Errorf("the gateway logged no failed TLS handshake; log:\n%s", g.log.String())
		}
		g.backend.none(t, "request", 200*time.Millisecond)
	})
}
