package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsframe"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testPair is a Pair between two socket pairs: the test holds the client's and the backend's
// far ends.
type testPair struct {
	p               *Pair
	client, backend *net.UnixConn // the test's ends
	done            chan Result
}

func startPair(t testing.TB, opts Options) *testPair {
	cg, ct := socketPair(t)
	bg, bt := socketPair(t)
	tp := &testPair{client: ct, backend: bt, done: make(chan Result, 1)}
	tp.p = NewPair(cg, bufio.NewReaderSize(cg, readerSize), bg, bufio.NewReaderSize(bg, readerSize), &opts)
	go func() { tp.done <- tp.p.Run() }()
	return tp
}

func (tp *testPair) close() {
	tp.client.Close()
	tp.backend.Close()
}

// readClose reads frames from r (checked for role) until a close and returns its code.
func readCloseFrom(t *testing.T, r io.Reader, role wsframe.Role) wsframe.CloseCode {
	t.Helper()
	br := bufio.NewReader(r)
	for {
		var hb [wsframe.MaxHeaderSize]byte
		h, err := wsframe.ReadHeader(br, &hb)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if err := h.Check(role, 0); err != nil {
			t.Fatalf("bad frame %+v: %v", h, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatalf("read payload: %v", err)
		}
		if h.Masked {
			wsframe.Mask(h.Mask, 0, p)
		}
		if h.Opcode == wsframe.OpClose {
			code, _, err := wsframe.ParseClosePayload(p)
			if err != nil {
				t.Fatalf("bad close %x: %v", p, err)
			}
			return code
		}
	}
}

func clientFrame(op wsframe.Opcode, payload []byte) []byte {
	h := wsframe.Header{Fin: true, Opcode: op, Masked: true, Mask: [4]byte{9, 8, 7, 6}}
	return wsframe.AppendFrame(nil, h, payload)
}

// TestPumpPanicContained: a panic in one pair's pump is recovered and logged with its stack,
// that pair sends 1011 to both sides and ends, and another pair running at the same time is
// unaffected.
func TestPumpPanicContained(t *testing.T) {
	defer goleak.VerifyNone(t)
	testPanicHook = func(src Side, h wsframe.Header) {
		if src == SideClient && h.Opcode == wsframe.OpBinary && h.Length == 13 {
			panic("test: injected pump panic")
		}
	}
	defer func() { testPanicHook = nil }()
	var logs syncBuffer
	opts := Options{CloseTimeout: 200 * time.Millisecond, WriteTimeout: time.Second,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	bad := startPair(t, opts)
	defer bad.close()
	good := startPair(t, opts)
	defer good.close()

	// The good pair forwards while the bad one panics.
	gbr := bufio.NewReader(good.backend)
	forward := func(i int) {
		t.Helper()
		msg := fmt.Appendf(nil, "message %d", i)
		good.client.Write(clientFrame(wsframe.OpText, msg))
		var hb [wsframe.MaxHeaderSize]byte
		h, err := wsframe.ReadHeader(gbr, &hb)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, h.Length)
		io.ReadFull(gbr, p)
		wsframe.Mask(h.Mask, 0, p)
		if !bytes.Equal(p, msg) {
			t.Fatalf("good pair forwarded %q, want %q", p, msg)
		}
	}
	forward(0)
	bad.client.Write(clientFrame(wsframe.OpBinary, []byte("boom 13 bytes")))
	if code := readCloseFrom(t, bad.client, wsframe.RoleClient); code != wsframe.CloseInternalError {
		t.Fatalf("client of the panicking pair got %d, want 1011", code)
	}
	if code := readCloseFrom(t, bad.backend, wsframe.RoleServer); code != wsframe.CloseInternalError {
		t.Fatalf("backend of the panicking pair got %d, want 1011", code)
	}
	bad.backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, wsframe.AppendClosePayload(nil, 1011, "")))
	bad.close() // both peers end their TCP connections after the close handshake
	select {
	case res := <-bad.done:
		if res.Cause != "panic" || res.ClientClose.Sent != wsframe.CloseInternalError {
			t.Fatalf("result %+v", res)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the panicking pair did not end")
	}
	for i := 1; i < 20; i++ {
		forward(i)
	}
	log := logs.String()
	if !strings.Contains(log, `"msg":"relay panic"`) || !strings.Contains(log, "injected pump panic") || !strings.Contains(log, "TestPumpPanicContained") {
		t.Fatalf("panic not logged with its stack:\n%s", log)
	}
	good.client.Write(clientFrame(wsframe.OpClose, wsframe.AppendClosePayload(nil, 1000, "")))
	if code := readCloseFrom(t, good.backend, wsframe.RoleServer); code != 1000 {
		t.Fatalf("good backend got %d", code)
	}
	good.backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, wsframe.AppendClosePayload(nil, 1000, "")))
	if code := readCloseFrom(t, good.client, wsframe.RoleClient); code != 1000 {
		t.Fatalf("good client got %d", code)
	}
	good.close()
	select {
	case <-good.done:
	case <-time.After(time.Second):
		t.Fatal("the good pair did not end after its close handshake")
	}
}
