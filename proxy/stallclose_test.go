//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsframe"
)

// TestCloseFromStalledClient: a client that has stopped reading (the gateway's write to it
// is blocked) sends a close. The backend gets that close at once, not when the blocked write
// times out, and the pair ends close_timeout later with the client's code recorded, not
// write_timeout later.
func TestCloseFromStalledClient(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, mode := range []string{"plain", "tls"} {
		t.Run(mode, func(t *testing.T) {
			sets := countDeadlineSets(t)
			opts := Options{WriteTimeout: 6 * time.Second, CloseTimeout: 500 * time.Millisecond}
			client, backend, done := modePair(t, mode, opts)
			defer func() { client.Close(); backend.Close() }()

			// The backend sends more than the sockets hold; the client reads none of it.
			frame := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, bytes.Repeat([]byte("x"), 32<<10))
			defer flood(backend, frame, 0)()
			waitFor(t, sets, 1) // the gateway's write to the client is blocked

			start := time.Now()
			var buf [wsframe.MaxControlPayload]byte
			if _, err := client.Write(clientFrame(wsframe.OpClose, wsframe.AppendClosePayload(buf[:0], 4001, "bye"))); err != nil {
				t.Fatal(err)
			}
			backend.SetReadDeadline(time.Now().Add(10 * time.Second))
			h, p, err := readFrame(backend, bufio.NewReader(backend))
			if err != nil || h.Opcode != wsframe.OpClose {
				t.Fatalf("backend got %+v, %v; want the client's close", h, err)
			}
			if code, reason, _ := wsframe.ParseClosePayload(p); code != 4001 || string(reason) != "bye" {
				t.Fatalf("backend got close %d %q, want 4001 \"bye\"", code, reason)
			}
			if el := time.Since(start); el > opts.WriteTimeout/4 {
				t.Fatalf("the client's close reached the backend after %v, behind the blocked write (write_timeout %v)", el, opts.WriteTimeout)
			}
			r := endsBeforeWriteTimeout(t, done, start, opts, "the client's close")
			if r.ClientClose.Received != 4001 || r.BackendClose.Sent != 4001 || r.ClosedBy != "client" {
				t.Fatalf("result %+v, want the client's 4001 recorded and forwarded, closed by the client", r)
			}
		})
	}
}

// TestCloseReplyAfterStall: a client that stalled and then read everything is no longer
// treated as stalled: when the backend does not answer the client's close, the gateway's own
// reply reaches the client at close_timeout. Buffered and spliced writes, and TLS.
func TestCloseReplyAfterStall(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, mode := range []string{"buffered", "spliced", "tls"} {
		t.Run(mode, func(t *testing.T) {
			sets := countDeadlineSets(t)
			opts := Options{WriteTimeout: 6 * time.Second, CloseTimeout: 500 * time.Millisecond}
			client, backend, done := modePair(t, mode, opts)
			defer func() { client.Close(); backend.Close(); <-done }()

			payload := bytes.Repeat([]byte("y"), 32<<10)
			frame := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, payload)
			const frames = 256 // 8 MiB: more than the sockets hold
			wrote := flood(backend, frame, frames)
			waitFor(t, sets, 1) // the gateway's write to the client blocked
			cbr, bbr := bufio.NewReader(client), bufio.NewReader(backend)
			for i := range frames {
				if h, p, err := readFrame(client, cbr); err != nil || !bytes.Equal(p, payload) {
					t.Fatalf("frame %d: client got %+v (%d bytes), %v", i, h, len(p), err)
				}
			}
			wrote()

			var buf [wsframe.MaxControlPayload]byte
			if _, err := client.Write(clientFrame(wsframe.OpClose, wsframe.AppendClosePayload(buf[:0], 4002, "done"))); err != nil {
				t.Fatal(err)
			}
			if h, p, err := readFrame(backend, bbr); err != nil || h.Opcode != wsframe.OpClose {
				t.Fatalf("backend got %+v %q, %v; want the client's close", h, p, err)
			}
			start := time.Now()
			h, p, err := readFrame(client, cbr) // the backend never answers
			if err != nil || h.Opcode != wsframe.OpClose {
				t.Fatalf("client got %+v, %v; want the gateway's close reply", h, err)
			}
			if code, reason, _ := wsframe.ParseClosePayload(p); code != 4002 || string(reason) != "done" {
				t.Fatalf("client got close %d %q, want its own 4002 \"done\" back", code, reason)
			}
			if el := time.Since(start); el > opts.CloseTimeout+time.Second {
				t.Fatalf("the reply came %v after the close, want close_timeout (%v)", el, opts.CloseTimeout)
			}
		})
	}
}

// TestShutdownWithStalledClient: a drain (Shutdown) while the gateway's write to a client is
// blocked tells the backend at once, and the pair ends close_timeout (and the linger) later,
// not when the blocked write times out.
func TestShutdownWithStalledClient(t *testing.T) {
	defer goleak.VerifyNone(t)
	sets := countDeadlineSets(t)
	opts := Options{WriteTimeout: 8 * time.Second, CloseTimeout: 2 * time.Second}
	cg, client := tcpPair(t)
	bg, backend := tcpPair(t)
	defer func() { client.Close(); backend.Close() }()
	done := make(chan Result, 1)
	p := NewPair(cg, GetReader(cg), bg, GetReader(bg), &opts)
	p.Start(func(r Result) { done <- r })

	frame := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, bytes.Repeat([]byte("z"), 32<<10))
	defer flood(backend, frame, 0)()
	waitFor(t, sets, 1) // the gateway's write to the client is blocked

	start := time.Now()
	p.Shutdown(wsframe.CloseGoingAway, "going away")
	h, pl, err := readFrame(backend, bufio.NewReader(backend))
	if err != nil || h.Opcode != wsframe.OpClose {
		t.Fatalf("backend got %+v, %v after %v; want the gateway's close", h, err, time.Since(start))
	}
	if code, reason, _ := wsframe.ParseClosePayload(pl); code != wsframe.CloseGoingAway || string(reason) != "going away" {
		t.Fatalf("backend got close %d %q, want 1001 \"going away\"", code, reason)
	}
	if el := time.Since(start); el > opts.CloseTimeout/2 {
		t.Fatalf("the backend was told after %v, behind the blocked write to the client", el)
	}
	r := endsBeforeWriteTimeout(t, done, start, opts, "the shutdown")
	if r.BackendClose.Sent != wsframe.CloseGoingAway || r.ClosedBy != "gateway" || r.Cause != "shutdown" {
		t.Fatalf("result %+v, want 1001 sent to the backend, closed by the gateway for shutdown", r)
	}
}

// endsBeforeWriteTimeout waits for a pair's result and fails the test unless the pair ended
// well before write_timeout after start (what happened then: since): about close_timeout, not
// behind a write blocked on a stalled client.
func endsBeforeWriteTimeout(t *testing.T, done chan Result, start time.Time, opts Options, since string) Result {
	t.Helper()
	var r Result
	select {
	case r = <-done:
	case <-time.After(opts.WriteTimeout + 5*time.Second):
		t.Fatal("the pair did not end")
	}
	if el := time.Since(start); el > opts.WriteTimeout*3/4 {
		t.Fatalf("the pair ended %v after %s; want about close_timeout (%v), not write_timeout (%v)", el, since, opts.CloseTimeout, opts.WriteTimeout)
	}
	return r
}
