package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// buildBinary builds wsgate once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wsgate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestDemo runs `wsgate demo` as a user would, echoes through it with a coder/websocket
// client, then stops it with SIGTERM and expects a clean exit.
func TestDemo(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "demo", "-addr", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	re := regexp.MustCompile(`ws://(127\.0\.0\.1:\d+)/echo`)
	var url string
	var rest bytes.Buffer
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil && !strings.HasSuffix(m[1], ":0") {
			url = "ws://" + m[1] + "/echo"
			break
		}
	}
	if url == "" {
		t.Fatal("demo printed no ws:// URL with its port")
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		for lines.Scan() {
			rest.WriteString(lines.Text() + "\n")
		}
	}()
	// output returns the demo's log after it has exited, for failure messages.
	output := func() string {
		cmd.Process.Kill()
		<-scanned
		return rest.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hello demo")); err != nil {
		t.Fatal(err)
	}
	typ, msg, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(msg) != "hello demo" {
		t.Fatalf("echo: %v %q %v", typ, msg, err)
	}
	// SIGTERM drains: the client gets 1001 "going away" and the process exits 0.
	cmd.Process.Signal(syscall.SIGTERM)
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("after SIGTERM the client got %v, want 1001; demo log:\n%s", err, output())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("demo exit: %v", err)
	}
}

func TestValidateExample(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-config", "config.hcl"}, &out, &errb); code != 0 {
		t.Fatalf("validate config.hcl: exit %d\n%s", code, errb.String())
	}
}

func TestValidateReportsDiagnostics(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(path, []byte("listen \"a\" {\n  address = \"127.0.0.1:1\"\n}\nroute \"/x\" {\n  backend = \"http://b\"\n}\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-config", path}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	// HCL's own format: the file, line and column, and the source snippet.
	if s := errb.String(); !strings.Contains(s, "bad.hcl line 5") || !strings.Contains(s, `backend = "http://b"`) {
		t.Fatalf("diagnostics lack file:line or snippet:\n%s", s)
	}
}

// TestDockerfile checks the Dockerfile's shape (no Docker engine runs here) and runs its build
// stage's commands on this machine.
func TestDockerfile(t *testing.T) {
	src, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	type stage struct {
		from  string
		lines []string
	}
	var stages []*stage
	for _, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "FROM ") {
			stages = append(stages, &stage{from: line})
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("instruction before FROM: %q", line)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	if len(stages) != 2 || !strings.Contains(stages[0].from, " AS build") {
		t.Fatalf("want a two-stage build with a stage named build, got %d stages", len(stages))
	}
	final := strings.Join(stages[1].lines, "\n")
	for _, want := range []string{"COPY --from=build", "USER nonroot", "VOLUME", "/var/lib/wsgate", "config.hcl", "ENTRYPOINT"} {
		if !strings.Contains(final, want) {
			t.Errorf("final stage lacks %q", want)
		}
	}
	// Run the build stage's RUN commands here, with /out mapped to a temporary folder.
	out := t.TempDir()
	for _, l := range stages[0].lines {
		cmdline, ok := strings.CutPrefix(l, "RUN ")
		if !ok {
			continue
		}
		cmdline = strings.ReplaceAll(cmdline, "/out/", out+"/")
		if b, err := exec.Command("sh", "-c", cmdline).CombinedOutput(); err != nil {
			t.Fatalf("RUN %s: %v\n%s", cmdline, err, b)
		}
	}
	if st, err := os.Stat(filepath.Join(out, "wsgate")); err != nil || st.Size() == 0 {
		t.Fatalf("build stage produced no binary: %v", err)
	}
}
