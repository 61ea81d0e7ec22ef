package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

// benchPair relays client frames to a sink over in-memory pipes. It returns the client end
// (write masked frames here) and the backend end (read re-masked frames here).
func benchPair(tb testing.TB, opts Options) (client, backend net.Conn, done chan Result) {
	cGW, cPeer := net.Pipe()
	bGW, bPeer := net.Pipe()
	return runBenchPair(cGW, cPeer, bGW, bPeer, opts)
}

// socketBenchPair is benchPair over Unix socket pairs: the relay then reads its sockets the
// way it reads TCP (from inside the raw read callback, parking when idle).
func socketBenchPair(tb testing.TB, opts Options) (client, backend net.Conn, done chan Result) {
	cGW, cPeer := socketPair(tb)
	bGW, bPeer := socketPair(tb)
	return runBenchPair(cGW, cPeer, bGW, bPeer, opts)
}

func runBenchPair(cGW, cPeer, bGW, bPeer net.Conn, opts Options) (client, backend net.Conn, done chan Result) {
	p := NewPair(cGW, bufio.NewReaderSize(cGW, readerSize), bGW, bufio.NewReaderSize(bGW, readerSize), &opts)
	done = make(chan Result, 1)
	go func() { done <- p.Run() }()
	return cPeer, bPeer, done
}

// BenchmarkRelay measures the client-to-backend pump: header parse and check, unmask and
// re-mask in one pass, and the write, per frame. Run with -benchmem: allocs/op must be 0.
func BenchmarkRelay(b *testing.B) { benchRelay(b, benchPair) }

// BenchmarkRelaySocket is BenchmarkRelay over kernel sockets, through the read path TCP
// connections take; allocs/op must be 0 there too.
func BenchmarkRelaySocket(b *testing.B) { benchRelay(b, socketBenchPair) }

func benchRelay(b *testing.B, newPair func(testing.TB, Options) (net.Conn, net.Conn, chan Result)) {
	for _, size := range []int{64, 1 << 10, 16 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			client, backend, done := newPair(b, Options{MaxFrameSize: 1 << 20, MaxMessageSize: 1 << 20, ValidateUTF8: false, WriteTimeout: 10 * time.Second})
			const batch = 16
			var frames []byte
			for i := 0; i < batch; i++ {
				h := wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, byte(i)}}
				frames = wsframe.AppendFrame(frames, h, make([]byte, size))
			}
			// Each input frame leaves as ceil(size/ChunkSize) frames of the same total payload.
			pieces := (size + ChunkSize - 1) / ChunkSize
			outPerFrame := int64(size + pieces*(2+4))
			if size >= 126 {
				outPerFrame = int64(size)
				for left := size; left > 0; left -= ChunkSize {
					n := min(left, ChunkSize)
					outPerFrame += int64(wsframe.Header{Length: int64(n), Masked: true}.Size())
				}
			}
			rounds := b.N/batch + 1
			end := sink(b, backend, client, done, int64(rounds*batch)*outPerFrame)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for r := 0; r < rounds; r++ {
				if _, err := client.Write(frames); err != nil {
					b.Fatal(err)
				}
			}
			end()
		})
	}
}

// sink reads and drops what the relay writes to from (one end of a pair), in a goroutine,
// until want bytes came. The returned end waits for them (failing b if fewer came), stops the
// timer, closes from and other (the pair's other end) and waits for the pair to finish.
func sink(b *testing.B, from, other net.Conn, done chan Result, want int64) (end func()) {
	sunk := make(chan int64, 1)
	go func() {
		buf := make([]byte, 64<<10)
		var n int64
		for n < want {
			k, err := from.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		sunk <- n
	}()
	return func() {
		if n := <-sunk; n != want {
			b.Fatalf("read %d bytes, want %d", n, want)
		}
		b.StopTimer()
		from.Close()
		other.Close()
		<-done
	}
}

// TestRelayRefragmentsLargeFrames checks a frame larger than ChunkSize leaves as fragments of
// at most ChunkSize with the first frame's opcode, FIN only on the last, payload intact.
func TestRelayRefragmentsLargeFrames(t *testing.T) {
	client, backend, done := benchPair(t, Options{MaxFrameSize: 1 << 20, MaxMessageSize: 1 << 20})
	defer func() { client.Close(); backend.Close(); <-done }()
	const size = 3*ChunkSize + 100
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go client.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText, Masked: true, Mask: [4]byte{9, 8, 7, 6}}, payload))
	backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(backend)
	var got []byte
	for i := 0; ; i++ {
		var hb [wsframe.MaxHeaderSize]byte
		h, err := wsframe.ReadHeader(br, &hb)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Check(wsframe.RoleServer, 0); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		wantOp := wsframe.OpContinuation
		if i == 0 {
			wantOp = wsframe.OpText
		}
		if h.Opcode != wantOp || h.Length > ChunkSize {
			t.Fatalf("frame %d: opcode %v length %d", i, h.Opcode, h.Length)
		}
		p := make([]byte, h.Length)
		io.ReadFull(br, p)
		wsframe.Mask(h.Mask, 0, p)
		got = append(got, p...)
		if h.Fin {
			if i != 3 {
				t.Fatalf("FIN on frame %d, want 4 fragments", i)
			}
			break
		}
	}
	if string(got) != string(payload) {
		t.Fatal("payload changed in transit")
	}
}

func TestLimiterCloseAndThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLimiter(5, 0, 5, false)
	for i := 0; i < 5; i++ {
		if d := l.reserve(at(now), true, 10); d != 0 {
			t.Fatalf("message %d within the burst refused", i)
		}
	}
	if d := l.reserve(at(now), true, 10); d == 0 {
		t.Fatal("6th message at once allowed past burst 5")
	}
	if d := l.reserve(at(now.Add(200*time.Millisecond)), true, 10); d != 0 {
		t.Fatal("a token should have refilled after 200ms at 5/s")
	}
	// Continuations are not new messages.
	if d := l.reserve(at(now.Add(200*time.Millisecond)), false, 10); d != 0 {
		t.Fatal("continuation charged as a message")
	}

	th := NewLimiter(0, 1000, 0, true) // 1000 B/s; burst is at least one chunk
	var total time.Duration
	for i := 0; i < 3; i++ {
		total = th.reserve(at(now), true, ChunkSize)
	}
	// Three chunks against a one-chunk burst: the third waits about 2 chunks' worth.
	want := 2 * time.Duration(ChunkSize) * time.Second / 1000
	if total < want-time.Second || total > want+time.Second {
		t.Fatalf("throttle delay %v, want about %v", total, want)
	}
	if NewLimiter(0, 0, 10, true) != nil {
		t.Fatal("a limiter with no rates should be nil (unlimited)")
	}
}

// TestLimiterSpendLocal checks the fast path's charge (relayRun): it spends only credit that
// reserve already took from the token buckets, in both buckets or in neither, and never more.
func TestLimiterSpendLocal(t *testing.T) {
	now := time.Unix(1000, 0)
	// 1000 msgs/s, burst 160: reserve takes 10 messages extra. 100,000 B/s: 1,000 bytes extra.
	l := NewLimiter(1000, 100_000, 160, false)
	if l.spendLocal(10) {
		t.Fatal("spent credit before any was taken")
	}
	if d := l.reserve(at(now), true, 10); d != 0 {
		t.Fatal("first message refused")
	}
	if l.msgs.credit != 10 || l.bytes.credit != 1000 {
		t.Fatalf("credit after reserve: %d messages, %d bytes; want 10, 1000", l.msgs.credit, l.bytes.credit)
	}
	for i := range 10 {
		if !l.spendLocal(10) {
			t.Fatalf("message %d not covered by the credit", i)
		}
	}
	if l.spendLocal(10) {
		t.Fatal("spent an 11th message out of 10 messages' credit")
	}
	if l.msgs.credit != 0 || l.bytes.credit != 900 {
		t.Fatalf("a refused spend charged something: %d messages, %d bytes left; want 0, 900", l.msgs.credit, l.bytes.credit)
	}
	// Bytes alone: a message larger than the byte credit is refused whole.
	b := NewLimiter(0, 100_000, 0, false)
	b.reserve(at(now), true, 100)
	if !b.spendLocal(999) || b.spendLocal(2) || b.bytes.credit != 1 {
		t.Fatalf("byte credit: %d left, want 1 after 999 spent and 2 refused", b.bytes.credit)
	}
}

// at returns a clock stopped at t, for limiter tests.
func at(t time.Time) func() time.Time { return func() time.Time { return t } }

// BenchmarkLimiterReserve is the per-frame cost of both limiters (messages and bytes) on
// 64-byte frames at rates the traffic stays within, as the relay calls it.
func BenchmarkLimiterReserve(b *testing.B) {
	for _, mode := range []string{"throttle", "close"} {
		b.Run(mode, func(b *testing.B) {
			l := NewLimiter(1e9, 1e12, 1<<20, mode == "throttle")
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if d := l.reserve(time.Now, true, 64); d != 0 && mode == "close" {
					b.Fatal("over the limit")
				}
			}
		})
	}
}
