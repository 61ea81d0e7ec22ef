package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

// FuzzRelay feeds arbitrary bytes as a client's input into a Pair whose backend is an
// in-memory socket, and checks:
//   - no panic (a pump's recover would turn it into a 1011, which fails the check below) and
//     no deadlock: Run returns within a deadline;
//   - the output to the backend is always a valid stream of masked client frames (parsed
//     with wsframe as RoleServer), with nothing after a close;
//   - every close frame sent, to either side, has a valid code and reason, and 1011 (what a
//     recovered pump panic sends) only when the client sent it;
//   - the data the backend receives is a prefix of the data payloads of the valid frames at
//     the start of the input (exactly all of them when the input is clean and no limit is
//     set), and the pongs the client receives answer its pings, in order;
//   - a second run with relayRun (run.go) off, every frame taking relayFrames' general path,
//     puts the same frames, pongs and close codes on the wire (sameOutcome).
//
// mode selects options: bit 0 validate_utf8, bit 1 a small max_frame_size, bit 2 a small
// max_message_size, bit 3 a backend that does not answer close frames, bit 4 a client that
// keeps its connection open after its input (the pair must still end: by the close handshake,
// a protocol error, or idle_timeout, set to 20ms in that mode).
//
//	go test -run '^$' -fuzz FuzzRelay -fuzzminimizetime 100x -parallel 1 ./proxy
func FuzzRelay(f *testing.F) {
	m := func(op wsframe.Opcode, fin bool, p string) []byte {
		return wsframe.AppendFrame(nil, wsframe.Header{Fin: fin, Opcode: op, Masked: true, Mask: [4]byte{1, 2, 3, 4}}, []byte(p))
	}
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	closeP := func(code uint16, r string) string { return string([]byte{byte(code >> 8), byte(code)}) + r }
	f.Add(m(wsframe.OpText, true, "hello"), byte(0))
	f.Add(cat(m(wsframe.OpText, false, "he"), m(wsframe.OpPing, true, "p"), m(wsframe.OpContinuation, true, "llo"), m(wsframe.OpClose, true, closeP(1000, "bye"))), byte(1))
	f.Add(cat(m(wsframe.OpBinary, true, string(make([]byte, 300))), m(wsframe.OpClose, true, "")), byte(2))
	f.Add(cat(m(wsframe.OpText, true, "ok"), m(wsframe.OpText, true, "\xff")), byte(1))
	f.Add(cat(m(wsframe.OpClose, true, closeP(1005, ""))), byte(0))
	f.Add(cat(m(wsframe.OpClose, true, closeP(4000, "x")), m(wsframe.OpText, true, "after")), byte(8))
	f.Add([]byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, byte(0))
	f.Add([]byte{0x82, 0xFE, 0, 5, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'}, byte(16))
	f.Add(cat(m(wsframe.OpPing, true, "a"), m(wsframe.OpPong, true, "b"), []byte{0x81, 0x05, 'x'}), byte(0))
	f.Add(cat(m(wsframe.OpText, false, "a"), m(wsframe.OpText, true, "b")), byte(4))
	// Runs of whole small messages (relayRun): 7- and 16-bit lengths, text and binary, a
	// fragmented message, a ping and a limit between them, invalid text at the end.
	var run []byte
	for i := range 40 {
		op := wsframe.OpBinary
		if i%3 == 0 {
			op = wsframe.OpText
		}
		run = append(run, m(op, true, strings.Repeat("r", i*i%300))...)
	}
	f.Add(cat(run, m(wsframe.OpText, false, "fr"), m(wsframe.OpContinuation, true, "ag"), run, m(wsframe.OpText, true, "\xc3")), byte(1))
	f.Add(cat(run, m(wsframe.OpPing, true, "p"), run), byte(6))
	f.Fuzz(func(t *testing.T, in []byte, mode byte) {
		fast := fuzzRelayOnce(t, in, mode, false)
		plain := fuzzRelayOnce(t, in, mode, true)
		sameOutcome(t, "with runs", "frame by frame", fast, plain)
	})
}

// expected is what a correct relay makes of a client input.
type expected struct {
	data  []byte   // unmasked data payloads of the valid frames, in order
	pings [][]byte // ping payloads, in order
	clean bool     // the input is valid to its end (or to a valid close)
	close int      // the client's close code (1005: none given), -1 if it sent none
}

// expect parses in as the frames a peer of the given role sends (RoleServer: a client's
// masked frames, as a server checks them; RoleClient: a backend's unmasked ones).
func expect(in []byte, role wsframe.Role) expected {
	e := expected{close: -1}
	var st wsframe.MessageState
	for {
		if len(in) == 0 {
			e.clean = true
			return e
		}
		h, n, err := wsframe.DecodeHeader(in)
		if err == nil {
			err = h.Check(role, 0)
		}
		if err == nil {
			err = st.Next(h)
		}
		if err != nil {
			return e
		}
		in = in[n:]
		avail := int(min(int64(len(in)), h.Length))
		p := bytes.Clone(in[:avail])
		wsframe.Mask(h.Mask, 0, p)
		in = in[avail:]
		if int64(avail) < h.Length {
			if !h.Opcode.IsControl() {
				e.data = append(e.data, p...) // a prefix of it may be forwarded
			}
			return e
		}
		switch h.Opcode {
		case wsframe.OpPing:
			e.pings = append(e.pings, p)
		case wsframe.OpPong:
		case wsframe.OpClose:
			code, _, err := wsframe.ParseClosePayload(p)
			if err != nil {
				return e
			}
			e.clean, e.close = true, int(code)
			return e
		default:
			e.data = append(e.data, p...)
		}
	}
}

// streamReport is what one side of the test saw.
type streamReport struct {
	data   []byte
	heads  []wsframe.Header // the data frames' headers, masks cleared
	pongs  [][]byte
	closes []wsframe.CloseCode
	err    error // a violation in the gateway's output
	end    error // how the stream ended (EOF, reset)
}

// readStream reads the gateway's frames from c until EOF, checking them for role: the
// backend reads RoleServer (masked) frames, the client RoleClient (unmasked) ones. onClose is
// called with each close payload. c is closed at the end (the peer ends its connection).
func readStream(c net.Conn, role wsframe.Role, onClose func([]byte)) *streamReport {
	r := &streamReport{}
	defer c.Close()
	br := bufio.NewReader(c)
	var st wsframe.MessageState
	var hb [wsframe.MaxHeaderSize]byte
	for {
		h, err := wsframe.ReadHeader(br, &hb)
		if err != nil {
			r.end = err
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				r.err = fmt.Errorf("gateway output: header: %w", err)
			}
			return r
		}
		if err := h.Check(role, 0); err != nil {
			r.err = fmt.Errorf("gateway output: %+v: %w", h, err)
			return r
		}
		if err := st.Next(h); err != nil {
			r.err = fmt.Errorf("gateway output: %+v: %w", h, err)
			return r
		}
		if len(r.closes) > 0 {
			r.err = fmt.Errorf("gateway output: frame %+v after a close", h)
			return r
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			r.err = fmt.Errorf("gateway output: frame %+v cut short: %w", h, err)
			return r
		}
		if h.Masked {
			wsframe.Mask(h.Mask, 0, p)
		}
		switch h.Opcode {
		case wsframe.OpClose:
			code, _, err := wsframe.ParseClosePayload(p)
			if err != nil {
				r.err = fmt.Errorf("gateway output: close %x: %w", p, err)
				return r
			}
			r.closes = append(r.closes, code)
			if onClose != nil {
				onClose(p)
			}
		case wsframe.OpPong:
			r.pongs = append(r.pongs, p)
		case wsframe.OpPing:
			// keepalive pings are off in the fuzz target
			r.err = fmt.Errorf("gateway output: unexpected ping")
			return r
		default:
			r.data = append(r.data, p...)
			h.Mask = [4]byte{}
			r.heads = append(r.heads, h)
		}
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) // a socket error from the closed peer
}

// panicSpotter is a log handler that notes a "relay panic" record (a recovered pump panic).
type panicSpotter struct {
	slog.Handler
	hit *atomic.Bool
}

func (h panicSpotter) Enabled(context.Context, slog.Level) bool { return true }

func (h panicSpotter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "relay panic" {
		h.hit.Store(true)
	}
	return nil
}

func fuzzRelayOnce(t *testing.T, in []byte, mode byte, noRun bool) fuzzRun {
	testNoRun = noRun
	defer func() { testNoRun = false }()
	var panicked atomic.Bool
	opts := Options{
		ValidateUTF8: mode&1 != 0,
		CloseTimeout: 50 * time.Millisecond, // far above a loaded CI machine's scheduling delays, as in FuzzRelayBackend
		WriteTimeout: time.Second,
		Logger:       slog.New(panicSpotter{slog.DiscardHandler, &panicked}),
	}
	if mode&16 != 0 {
		opts.IdleTimeout = 20 * time.Millisecond // what ends a pair whose client stays silent
	}
	limited := false
	if mode&2 != 0 {
		opts.MaxFrameSize, limited = 64, true
	}
	if mode&4 != 0 {
		opts.MaxMessageSize, limited = 100, true
	}
	tp := startPair(t, opts)
	defer tp.close()

	var wg sync.WaitGroup
	var back, front *streamReport
	wg.Add(2)
	go func() {
		defer wg.Done()
		back = readStream(tp.backend, wsframe.RoleServer, func(p []byte) {
			if mode&8 == 0 {
				tp.backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, p))
			}
		})
	}()
	go func() {
		defer wg.Done()
		front = readStream(tp.client, wsframe.RoleClient, nil)
	}()
	wg.Add(1)
	go func() { // the gateway may stop reading: a blocked write must not hide a deadlock
		defer wg.Done()
		tp.client.Write(in)
		if mode&16 == 0 {
			tp.client.CloseWrite()
		}
	}()

	awaitRun(t, tp, &wg, &panicked)
	e := expect(in, wsframe.RoleServer)
	checkRelayed(t, e, "client", front, back)
	if e.clean && !limited && !opts.ValidateUTF8 {
		if !bytes.Equal(back.data, e.data) {
			t.Fatalf("clean input: backend got %d data bytes, want all %d", len(back.data), len(e.data))
		}
		if len(front.pongs) != len(e.pings) {
			t.Fatalf("clean input: client got %d pongs for %d pings (front end %v, back closes %v)", len(front.pongs), len(e.pings), front.end, back.closes)
		}
		switch {
		case e.close == -1 && mode&16 == 0:
			// The client's TCP connection ended without a close: 1001 "client gone".
			if len(back.closes) != 1 || back.closes[0] != wsframe.CloseGoingAway {
				t.Fatalf("client left without a close: backend got %v, want [1001]", back.closes)
			}
		case e.close >= 0:
			if len(back.closes) != 1 || int(back.closes[0]) != e.close {
				t.Fatalf("client closed with %d: backend got %v", e.close, back.closes)
			}
		}
	}
	return fuzzRun{front: front, back: back}
}

// awaitRun waits for tp's Run to return (10 s, or a deadlock fails t), then for the test's
// readers and writers (wg), which end once Run has closed the gateway's sockets, and fails t
// if a pump panicked.
func awaitRun(t *testing.T, tp *testPair, wg *sync.WaitGroup, panicked *atomic.Bool) {
	t.Helper()
	var res Result
	select {
	case res = <-tp.done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("deadlock: Run did not return within 10s\n%s", buf[:runtime.Stack(buf, true)])
	}
	readersDone := make(chan struct{})
	go func() { wg.Wait(); close(readersDone) }()
	select {
	case <-readersDone:
	case <-time.After(5 * time.Second):
		tp.close()
		<-readersDone
		t.Fatal("the gateway's sockets were still open after Run returned")
	}
	if panicked.Load() || res.Cause == "panic" {
		t.Fatal("a pump panicked")
	}
}

// checkRelayed checks what the peers saw of input e from the sender (named who): src is what
// the sender's own end read back (pongs, closes), dst what the other peer read. Both streams
// are valid, 1011 (a recovered pump panic) appears only if the sender sent it, dst's data is
// a prefix of the input's, and src's pongs answer the sender's pings in order.
func checkRelayed(t *testing.T, e expected, who string, src, dst *streamReport) {
	t.Helper()
	for _, r := range []*streamReport{src, dst} {
		if r.err != nil {
			t.Fatal(r.err)
		}
		for _, c := range r.closes {
			if c == wsframe.CloseInternalError && e.close != int(wsframe.CloseInternalError) {
				t.Fatalf("1011 sent, but the %s never sent it: a pump panicked?", who)
			}
		}
	}
	if !bytes.HasPrefix(e.data, dst.data) {
		t.Fatalf("%d data bytes relayed that are not a prefix of the %s's %d", len(dst.data), who, len(e.data))
	}
	if len(src.pongs) > len(e.pings) {
		t.Fatalf("the %s got %d pongs for %d pings", who, len(src.pongs), len(e.pings))
	}
	for i, p := range src.pongs {
		if !bytes.Equal(p, e.pings[i]) {
			t.Fatalf("pong %d %q answers ping %q", i, p, e.pings[i])
		}
	}
}
