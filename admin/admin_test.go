package admin_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/admin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	var ready atomic.Bool
	var reloadErr atomic.Value
	reloadErr.Store(errBox{})
	s := admin.New(admin.Options{
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "wsgate_x 1\n") }),
		Ready:   ready.Load,
		Reload: func() (string, error) {
			return "abc", reloadErr.Load().(errBox).err
		},
	})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.Addr().String()

	cases := []struct {
		name, method, path string
		setup              func()
		status             int
		body               string
	}{
		{"metrics", "GET", "/metrics", nil, 200, "wsgate_x 1"},
		{"healthz", "GET", "/healthz", nil, 200, "ok"},
		{"not ready", "GET", "/readyz", nil, 503, "not ready"},
		{"ready", "GET", "/readyz", func() { ready.Store(true) }, 200, "ready"},
		{"reload must be POST", "GET", "/reload", nil, 405, ""},
		{"reload ok", "POST", "/reload", nil, 200, "reloaded, hash abc"},
		{"reload invalid", "POST", "/reload", func() {
			reloadErr.Store(errBox{&admin.InvalidConfigError{Diagnostics: "Error: bad\n\n  on c.hcl line 3:\n"}})
		}, 400, "on c.hcl line 3:"},
		{"reload failed", "POST", "/reload", func() { reloadErr.Store(errBox{errors.New("bind: address in use")}) }, 500, "address in use"},
		{"unknown path", "GET", "/", nil, 404, ""},
	}
	for _, c := range cases {
		if c.setup != nil {
			c.setup()
		}
		status, body := get(t, c.method, base+c.path)
		if status != c.status || !strings.Contains(body, c.body) {
			t.Errorf("%s: %s %s = %d %q, want %d containing %q", c.name, c.method, c.path, status, body, c.status, c.body)
		}
	}
}

type errBox struct{ err error }

func TestRebind(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	s := admin.New(admin.Options{})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := s.Addr().String()
	if st, _ := get(t, "GET", "http://"+old+"/healthz"); st != 200 {
		t.Fatalf("healthz %d", st)
	}
	// A busy address is refused and the server stays where it was.
	busy, _ := net.Listen("tcp", "127.0.0.1:0")
	defer busy.Close()
	if err := s.Listen(busy.Addr().String()); err == nil {
		t.Fatal("Listen on a busy address succeeded")
	}
	if s.Addr().String() != old {
		t.Fatalf("moved to %v after a failed bind", s.Addr())
	}
	if err := s.Listen("127.0.0.2:0"); err != nil {
		t.Fatal(err)
	}
	if st, _ := get(t, "GET", "http://"+s.Addr().String()+"/healthz"); st != 200 {
		t.Fatalf("healthz on the new address %d", st)
	}
	http.DefaultClient.CloseIdleConnections()
	waitClosed(t, old)
}

// waitClosed waits until addr refuses connections (the old server shuts down gracefully).
func waitClosed(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("old address %s still accepts", addr)
}
