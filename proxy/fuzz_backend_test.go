package proxy

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

// FuzzRelayBackend feeds arbitrary bytes as a backend's input into a Pair and runs it twice:
// with the fast paths on (large payloads spliced, splice_linux.go; runs of small messages
// relayed at once, run.go) and with every frame taking relayFrames' buffered general path. Each run is
// checked as FuzzRelay checks the other direction: no panic or deadlock, a valid stream of
// unmasked frames to the client with nothing after a close, its data a prefix of the input's
// valid frames' data (all of it for clean input without limits), and pongs to the backend
// that answer its pings. The two runs must then agree on everything the peers saw
// (sameOutcome).
//
// mode selects options: bit 0 validate_utf8, bit 1 a max_frame_size of 20 KiB, bit 2 a
// max_message_size of 100 KiB, bit 3 a client that does not answer close frames.
//
//	go test -run '^$' -fuzz FuzzRelayBackend -fuzzminimizetime 100x -parallel 1 ./proxy
func FuzzRelayBackend(f *testing.F) {
	u := func(op wsframe.Opcode, fin bool, p []byte) []byte {
		return wsframe.AppendFrame(nil, wsframe.Header{Fin: fin, Opcode: op}, p)
	}
	big := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a' + byte(i%26)
		}
		return b
	}
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	closeF := func(code uint16, r string) []byte {
		return u(wsframe.OpClose, true, append([]byte{byte(code >> 8), byte(code)}, r...))
	}
	f.Add(u(wsframe.OpText, true, []byte("hello")), byte(0))
	f.Add(cat(u(wsframe.OpBinary, true, big(20<<10)), u(wsframe.OpBinary, true, big(70<<10)), closeF(1000, "bye")), byte(0))
	f.Add(cat(u(wsframe.OpBinary, false, big(40<<10)), u(wsframe.OpPing, true, []byte("p")), u(wsframe.OpContinuation, true, big(90<<10))), byte(0))
	f.Add(cat(u(wsframe.OpText, true, big(30<<10)), u(wsframe.OpText, true, append(big(20<<10), 0xff))), byte(1))
	f.Add(u(wsframe.OpBinary, true, big(150<<10))[:100<<10], byte(0)) // cut in the third chunk
	f.Add(cat(u(wsframe.OpBinary, true, big(30<<10)), u(wsframe.OpBinary, true, big(200))), byte(2))
	f.Add(cat(u(wsframe.OpBinary, false, big(60<<10)), u(wsframe.OpContinuation, true, big(60<<10))), byte(4))
	f.Add(cat(u(wsframe.OpBinary, true, big(17<<10)), closeF(4001, "x")), byte(8))
	f.Add(cat(u(wsframe.OpBinary, true, big(64<<10)), wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Masked: true}, big(20<<10))), byte(0))
	f.Fuzz(func(t *testing.T, in []byte, mode byte) {
		fast := fuzzBackendOnce(t, in, mode, false)
		plain := fuzzBackendOnce(t, in, mode, true)
		sameOutcome(t, "spliced and run", "buffered frame by frame", fast, plain)
	})
}

// sameOutcome fails t unless two runs of one input, the relay's fast paths on (a) and off
// (b), put the same things on the wire: the data the far peer got, frame by frame (opcode,
// FIN, length), its close codes, and the sender's pongs and close codes.
func sameOutcome(t *testing.T, aName, bName string, a, b fuzzRun) {
	t.Helper()
	for _, d := range []struct {
		what string
		a, b any
	}{
		{"client data", a.front.data, b.front.data},
		{"client frames", a.front.heads, b.front.heads},
		{"client pongs", a.front.pongs, b.front.pongs},
		{"client closes", a.front.closes, b.front.closes},
		{"backend data", a.back.data, b.back.data},
		{"backend frames", a.back.heads, b.back.heads},
		{"backend pongs", a.back.pongs, b.back.pongs},
		{"backend closes", a.back.closes, b.back.closes},
	} {
		if fmt.Sprint(d.a) != fmt.Sprint(d.b) {
			t.Fatalf("%s differ, %s against %s:\n%.300v\n%.300v", d.what, aName, bName, d.a, d.b)
		}
	}
}

type fuzzRun struct{ front, back *streamReport }

func fuzzBackendOnce(t *testing.T, in []byte, mode byte, slow bool) fuzzRun {
	testNoSplice, testNoRun = slow, slow
	defer func() { testNoSplice, testNoRun = false, false }()
	var panicked atomic.Bool
	opts := Options{
		ValidateUTF8: mode&1 != 0,
		CloseTimeout: 50 * time.Millisecond,
		WriteTimeout: time.Second,
		Logger:       slog.New(panicSpotter{slog.DiscardHandler, &panicked}),
	}
	limited := false
	if mode&2 != 0 {
		opts.MaxFrameSize, limited = 20<<10, true
	}
	if mode&4 != 0 {
		opts.MaxMessageSize, limited = 100<<10, true
	}
	tp := startPair(t, opts)
	defer tp.close()

	var wg sync.WaitGroup
	var r fuzzRun
	wg.Add(3)
	go func() {
		defer wg.Done()
		r.front = readStream(tp.client, wsframe.RoleClient, func(p []byte) {
			if mode&8 == 0 {
				h := wsframe.Header{Fin: true, Opcode: wsframe.OpClose, Masked: true, Mask: [4]byte{5, 6, 7, 8}}
				q := slices.Clone(p)
				wsframe.Mask(h.Mask, 0, q)
				tp.client.Write(wsframe.AppendFrame(nil, h, q))
			}
		})
	}()
	go func() {
		defer wg.Done()
		r.back = readStream(tp.backend, wsframe.RoleServer, nil)
	}()
	go func() { // the gateway may stop reading: a blocked write must not hide a deadlock
		defer wg.Done()
		tp.backend.Write(in)
		tp.backend.CloseWrite()
	}()

	awaitRun(t, tp, &wg, &panicked)
	e := expect(in, wsframe.RoleClient)
	checkRelayed(t, e, "backend", r.back, r.front)
	if e.clean && !limited && !opts.ValidateUTF8 && !bytes.Equal(r.front.data, e.data) {
		t.Fatalf("clean input: client got %d data bytes, want all %d", len(r.front.data), len(e.data))
	}
	return r
}
