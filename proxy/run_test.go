package proxy

import (
	"bufio"
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

// runResult is what one relayRun call did: the frames it relayed, what it left in the output
// buffer, what it wrote to dst's socket itself, and what it left in src's read buffer.
type runResult struct {
	frames       int
	out, written []byte
	rest         []byte
}

// runOnce calls relayRun once on in, as read from a client (fromClient: masked frames, the
// backend masked) or from a backend (unmasked both ways), with lim as src's limiter.
func runOnce(t *testing.T, opts Options, fromClient bool, lim *Limiter, in []byte) runResult {
	t.Helper()
	p := &Pair{opts: &opts}
	p.client.pair, p.backend.pair, p.backend.who = p, p, SideBackend
	src, dst := &p.client, &p.backend
	src.role, dst.mask = wsframe.RoleServer, true
	if !fromClient {
		src, dst = &p.backend, &p.client
		src.role, dst.mask = wsframe.RoleClient, false
	}
	src.lim = lim
	src.br = bufio.NewReaderSize(bytes.NewReader(in), len(in)+16)
	src.br.Peek(len(in)) // all of in is buffered, as after a read of it
	gw, peer := socketPair(t)
	defer gw.Close()
	defer peer.Close()
	dst.conn = gw

	var (
		out *[bufSize]byte
		w   int
		r   runResult
	)
	r.frames = p.relayRun(src, dst, &out, &w)
	if out != nil {
		r.out = bytes.Clone(out[:w])
	}
	gw.CloseWrite()
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	r.written, _ = io.ReadAll(peer)
	r.rest, _ = io.ReadAll(src.br)
	if got := int(src.stats.Messages); got != r.frames || int(src.stats.DataFrames) != r.frames {
		t.Fatalf("stats: %d messages, %d data frames; relayRun said %d", got, src.stats.DataFrames, r.frames)
	}
	return r
}

// frameOf is one frame as relayFrames would write it, for comparing payloads and headers.
type frameOf struct {
	op      wsframe.Opcode
	fin     bool
	masked  bool
	payload string
}

// parseFrames parses b as frames (unmasking masked ones), failing t on anything invalid.
func parseFrames(t *testing.T, b []byte) []frameOf {
	t.Helper()
	var fs []frameOf
	for len(b) > 0 {
		h, n, err := wsframe.DecodeHeader(b)
		if err != nil {
			t.Fatalf("frame %d: %v", len(fs), err)
		}
		p := bytes.Clone(b[n : n+int(h.Length)])
		if h.Masked {
			wsframe.Mask(h.Mask, 0, p)
		}
		fs = append(fs, frameOf{h.Opcode, h.Fin, h.Masked, string(p)})
		b = b[n+int(h.Length):]
	}
	return fs
}

// runInput is n whole messages of varied sizes (7- and 16-bit lengths, text and binary) as a
// client (masked) or a backend sends them, and the frames the far side must get.
func runInput(n int, masked bool) ([]byte, []frameOf) {
	var in []byte
	var want []frameOf
	for i := range n {
		op := wsframe.OpBinary
		if i%3 == 0 {
			op = wsframe.OpText
		}
		p := strings.Repeat(string(rune('a'+i%26)), i*37%400)
		in = wsframe.AppendFrame(in, wsframe.Header{Fin: true, Opcode: op, Masked: masked, Mask: [4]byte{1, 2, byte(i), 4}}, []byte(p))
		want = append(want, frameOf{op, true, masked, p}) // masked again for a backend
	}
	return in, want
}

// TestRelayRunRelaysWholeMessages checks the run relay on the case it exists for: a buffer of
// whole messages leaves as the same frames, re-masked for a backend in the output buffer, and
// written byte for byte from the read buffer for a client.
func TestRelayRunRelaysWholeMessages(t *testing.T) {
	ping := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpPing, Masked: true}, []byte("p"))
	opts := Options{ValidateUTF8: true, MaxFrameSize: 1 << 20, MaxMessageSize: 1 << 20}

	in, want := runInput(50, true)
	r := runOnce(t, opts, true, nil, append(in, ping...))
	if r.frames != 50 || len(r.written) != 0 {
		t.Fatalf("client to backend: %d frames relayed, %d bytes written; want 50 and 0", r.frames, len(r.written))
	}
	if got := parseFrames(t, r.out); !slices.Equal(got, want) {
		t.Fatalf("client to backend: the output frames differ from the input's")
	}
	if !bytes.Equal(r.rest, ping) {
		t.Fatalf("client to backend: %q left in the read buffer, want the ping", r.rest)
	}

	in, _ = runInput(50, false)
	r = runOnce(t, opts, false, nil, append(in, 0x01, 0x01, 'x')) // then a fragment
	if r.frames != 50 || len(r.out) != 0 {
		t.Fatalf("backend to client: %d frames relayed, %d bytes left in out; want 50 and 0", r.frames, len(r.out))
	}
	if !bytes.Equal(r.written, in) {
		t.Fatal("backend to client: the bytes written are not the input's own")
	}
	if !bytes.Equal(r.rest, []byte{0x01, 0x01, 'x'}) {
		t.Fatalf("backend to client: %q left, want the fragment", r.rest)
	}
}

// TestRelayRunStops checks that the run relay leaves each frame it must not take to
// relayFrames, untouched at the front of the buffer, after relaying the ones before it.
func TestRelayRunStops(t *testing.T) {
	m := func(op wsframe.Opcode, fin bool, p string) []byte {
		return wsframe.AppendFrame(nil, wsframe.Header{Fin: fin, Opcode: op, Masked: true, Mask: [4]byte{9, 8, 7, 6}}, []byte(p))
	}
	three, _ := runInput(3, true)
	base := Options{ValidateUTF8: true, MaxFrameSize: 1 << 20, MaxMessageSize: 1 << 20}
	limited := base
	limited.MaxFrameSize = 100
	msgLimited := base
	msgLimited.MaxMessageSize = 100
	long := m(wsframe.OpBinary, true, strings.Repeat("x", 200))
	len64 := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Masked: true}, make([]byte, 70000))
	nonMinimal := []byte{0x82, 0xFE, 0, 5, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'}
	for _, c := range []struct {
		name string
		opts Options
		lim  *Limiter
		stop []byte // the frame it must stop at, and any after it
	}{
		{"control frame", base, nil, m(wsframe.OpPong, true, "")},
		{"fragment", base, nil, m(wsframe.OpBinary, false, "a")},
		{"continuation", base, nil, m(wsframe.OpContinuation, true, "a")},
		{"reserved bit", base, nil, append([]byte{0xC2}, m(wsframe.OpBinary, true, "a")[1:]...)},
		{"reserved opcode", base, nil, append([]byte{0x83}, m(wsframe.OpBinary, true, "a")[1:]...)},
		// Followed by a frame, so that read as masked it would look whole.
		{"unmasked from a client", base, nil, append(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, []byte("abcdefgh")), m(wsframe.OpBinary, true, "next")...)},
		{"64-bit length", base, nil, len64},
		{"non-minimal length", base, nil, nonMinimal},
		{"frame not all buffered", base, nil, long[:50]},
		{"max_frame_size", limited, nil, long},
		{"max_message_size", msgLimited, nil, long},
		{"invalid UTF-8", base, nil, m(wsframe.OpText, true, "ok\xff")},
		{"rate credit used up", base, NewLimiter(1, 0, 1, false), m(wsframe.OpBinary, true, "a")},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := append(bytes.Clone(three), c.stop...)
			want := 3
			if c.lim != nil {
				want = 0 // no credit was ever taken: reserve's slow path decides
			}
			r := runOnce(t, c.opts, true, c.lim, in)
			if r.frames != want {
				t.Fatalf("%d frames relayed, want %d", r.frames, want)
			}
			if want == 3 && !bytes.Equal(r.rest, c.stop) {
				t.Fatalf("left %d bytes, want the %d of the frame it must stop at", len(r.rest), len(c.stop))
			}
		})
	}

	// From a backend, written straight from the read buffer: invalid text stops it too.
	fromBackend, _ := runInput(3, false)
	bad := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("ok\xff"))
	r := runOnce(t, base, false, nil, append(bytes.Clone(fromBackend), bad...))
	if r.frames != 3 || !bytes.Equal(r.written, fromBackend) || !bytes.Equal(r.rest, bad) {
		t.Fatalf("backend text: %d frames, %d bytes written, %q left; want 3, %d, the invalid frame", r.frames, len(r.written), r.rest, len(fromBackend))
	}

	// A message in progress: the run waits for relayFrames to finish it.
	p := &Pair{opts: &base}
	p.client.pair, p.backend.pair, p.backend.who = p, p, SideBackend
	p.client.msg.frames.Next(wsframe.Header{Opcode: wsframe.OpBinary})
	p.client.br = bufio.NewReader(bytes.NewReader(three))
	p.client.br.Peek(len(three))
	var out *[bufSize]byte
	var w int
	if n := p.relayRun(&p.client, &p.backend, &out, &w); n != 0 || out != nil {
		t.Fatalf("relayed %d frames inside a fragmented message", n)
	}
}
