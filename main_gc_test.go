package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestGCTargetBinary: without GOGC in its environment, wsgate raises GOGC above 50 while a
// stream of requests makes it allocate with a small live heap (go_gc_gogc_percent on
// /metrics), and is back at 50 once they stop; with GOGC=100 in the environment it leaves
// GOGC at 100 throughout.
func TestGCTargetBinary(t *testing.T) {
	bin := buildBinary(t)
	cfgPath := filepath.Join(t.TempDir(), "wsgate.hcl")
	writeConfig(t, cfgPath, fmt.Sprintf(`
listen "pub" { address = "127.0.0.1:0" }
admin { address = "127.0.0.1:0" }
%s
route "/echo" { backend = "ws://127.0.0.1:1/" }
`, opsLimits))
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOGC=") {
			env = append(env, kv)
		}
	}
	re := regexp.MustCompile(`(?m)^go_gc_gogc_percent (\d+)$`)
	for _, c := range []struct {
		name          string
		env           []string
		busy, quietly string
	}{
		{"GOGC unset", env, "", "50"}, // busy: anything above 50
		{"GOGC=100", append(env[:len(env):len(env)], "GOGC=100"), "100", "100"},
	} {
		p := startWsgate(t, bin, cfgPath, c.env...)
		pub, adm := p.addrs()
		gogc := func() string {
			st, body := httpGet(t, "http://"+adm+"/metrics")
			m := re.FindStringSubmatch(body)
			if st != 200 || m == nil {
				t.Fatalf("%s: GET /metrics: %d, no go_gc_gogc_percent", c.name, st)
			}
			return m[1]
		}
		// Plain GETs (answered 426) on fresh connections: a few KiB of garbage each.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
				for {
					select {
					case <-stop:
						return
					default:
					}
					if resp, err := cl.Get("http://" + pub + "/echo"); err == nil {
						resp.Body.Close()
					}
				}
			}()
		}
		seen := ""
		for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if seen = gogc(); c.busy == "" && seen != "50" || c.busy != "" && seen != c.busy {
				break
			}
		}
		close(stop)
		wg.Wait()
		if c.busy == "" && seen == "50" || c.busy != "" && seen != c.busy {
			t.Errorf("%s: go_gc_gogc_percent %s under a stream of requests, want %s", c.name, seen, map[string]string{"": "above 50"}[c.busy]+c.busy)
		}
		// A scrape of /metrics allocates too: look once a second (Quiet is 1 MiB a second).
		for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
			if seen = gogc(); seen == c.quietly {
				break
			}
		}
		if seen != c.quietly {
			t.Errorf("%s: go_gc_gogc_percent %s once quiet, want %s", c.name, seen, c.quietly)
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.exit(10 * time.Second); code != 0 {
			t.Fatalf("%s: exit code %d", c.name, code)
		}
	}
}
