package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsframe"
)

// splitStream builds a stream of frames of awkward sizes around the read buffer (16 KiB) and
// the chunk size (64 KiB): empty, header-size boundaries (125/126, 65535/65536), a frame that
// just fits the buffer with its header and one that just does not, runs of tiny frames, a
// fragmented message with a ping inside, and a final close. It returns the stream and the
// data bytes a peer should receive, in order.
func splitStream(masked bool, seed uint64) (stream, data []byte) {
	rng := rand.New(rand.NewPCG(seed, 7))
	frame := func(fin bool, op wsframe.Opcode, p []byte) {
		h := wsframe.Header{Fin: fin, Opcode: op, Masked: masked}
		if masked {
			k := rng.Uint32()
			h.Mask = [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
		}
		stream = wsframe.AppendFrame(stream, h, p)
	}
	payload := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.UintN(256))
		}
		return p
	}
	for _, n := range []int{0, 1, 2, 125, 126, 127, 1000, readerSize, 9000, pumpReaderSize - 10, pumpReaderSize - 4, pumpReaderSize, 65535, 65536, 70000} {
		p := payload(n)
		frame(true, wsframe.OpBinary, p)
		data = append(data, p...)
	}
	for i := range 300 {
		p := payload(1 + i%40)
		frame(true, wsframe.OpBinary, p)
		data = append(data, p...)
	}
	a, b, c := []byte("frag-one "), payload(5000), []byte(" frag-three")
	frame(false, wsframe.OpBinary, a)
	frame(true, wsframe.OpPing, []byte("mid"))
	frame(false, wsframe.OpContinuation, b)
	frame(true, wsframe.OpContinuation, c)
	data = append(append(append(data, a...), b...), c...)
	return stream, data
}

// writeSplit writes b to c in random pieces of 1 to 700 bytes, pausing now and then, so the
// gateway's reads end inside headers and payloads.
func writeSplit(c net.Conn, b []byte, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 11))
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(700))
		if _, err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		if rng.IntN(8) == 0 {
			time.Sleep(200 * time.Microsecond)
		}
	}
	return nil
}

// TestRelaySplitReads: frames that arrive cut at every kind of boundary (inside the header,
// inside the payload, several frames per read, frames larger than the read buffer, a ping
// inside a fragmented message) are relayed byte for byte in both directions at once, each
// ping is answered on its own side, and a split close handshake completes with 1000.
func TestRelaySplitReads(t *testing.T) {
	defer goleak.VerifyNone(t)
	for seed := range uint64(4) {
		tp := startPair(t, Options{CloseTimeout: 2 * time.Second, WriteTimeout: 5 * time.Second})
		fromClient, wantAtBackend := splitStream(true, seed)
		fromBackend, wantAtClient := splitStream(false, seed+100)

		type saw struct {
			data, pong []byte
			err        error
		}
		backendSaw, clientSaw := make(chan saw, 1), make(chan saw, 1)
		read := func(c net.Conn, role wsframe.Role, want int, out chan<- saw) {
			var s saw
			s.data, s.pong, s.err = readData(c, role, want)
			out <- s
		}
		go read(tp.backend, wsframe.RoleServer, len(wantAtBackend), backendSaw)
		go read(tp.client, wsframe.RoleClient, len(wantAtClient), clientSaw)
		errs := make(chan error, 2)
		go func() { errs <- writeSplit(tp.client, fromClient, seed) }()
		go func() { errs <- writeSplit(tp.backend, fromBackend, seed+1) }()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("seed %d: write: %v", seed, err)
			}
		}
		for _, c := range []struct {
			name string
			saw  saw
			want []byte
		}{{"backend", <-backendSaw, wantAtBackend}, {"client", <-clientSaw, wantAtClient}} {
			if c.saw.err != nil {
				t.Fatalf("seed %d: %s: %v", seed, c.name, c.saw.err)
			}
			if !bytes.Equal(c.saw.data, c.want) {
				t.Fatalf("seed %d: %s received %d data bytes, want %d (first difference at %d)",
					seed, c.name, len(c.saw.data), len(c.want), firstDiff(c.saw.data, c.want))
			}
			if string(c.saw.pong) != "mid" {
				t.Fatalf("seed %d: %s got pong %q, want \"mid\"", seed, c.name, c.saw.pong)
			}
		}
		// The close handshake, split as well.
		if err := writeSplit(tp.client, clientFrame(wsframe.OpClose, wsframe.AppendClosePayload(nil, 1000, "done")), seed); err != nil {
			t.Fatal(err)
		}
		if code := readCloseFrom(t, tp.backend, wsframe.RoleServer); code != 1000 {
			t.Fatalf("seed %d: backend got close %d, want 1000", seed, code)
		}
		reply := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpClose}, wsframe.AppendClosePayload(nil, 1000, "done"))
		if err := writeSplit(tp.backend, reply, seed); err != nil {
			t.Fatal(err)
		}
		if code := readCloseFrom(t, tp.client, wsframe.RoleClient); code != 1000 {
			t.Fatalf("seed %d: client got close %d, want 1000", seed, code)
		}
		tp.close() // the peers end their connections after the close handshake
		var res Result
		select {
		case res = <-tp.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("seed %d: pair did not end", seed)
		}
		// 15 sized + 300 small + 1 fragmented message each way.
		if res.Client.Messages != 316 || res.Backend.Messages != 316 {
			t.Fatalf("seed %d: messages client %d backend %d, want 316 each", seed, res.Client.Messages, res.Backend.Messages)
		}
		if res.ClientClose.Received != 1000 || res.BackendClose.Received != 1000 {
			t.Fatalf("seed %d: close %+v / %+v", seed, res.ClientClose, res.BackendClose)
		}
	}
}

// readData reads the gateway's frames from c (checked for role) until want data bytes and a
// pong have come, and returns them with the pong's payload.
func readData(c net.Conn, role wsframe.Role, want int) (data, pong []byte, err error) {
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	br := bufio.NewReader(c)
	var st wsframe.MessageState
	var hb [wsframe.MaxHeaderSize]byte
	for len(data) < want || pong == nil {
		h, err := wsframe.ReadHeader(br, &hb)
		if err == nil {
			err = h.Check(role, 0)
		}
		if err == nil {
			err = st.Next(h)
		}
		if err != nil {
			return data, pong, fmt.Errorf("after %d data bytes: %w", len(data), err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return data, pong, err
		}
		if h.Masked {
			wsframe.Mask(h.Mask, 0, p)
		}
		switch h.Opcode {
		case wsframe.OpPong:
			pong = p
		case wsframe.OpBinary, wsframe.OpContinuation:
			data = append(data, p...)
		default:
			return data, pong, fmt.Errorf("unexpected frame %+v", h)
		}
	}
	return data, pong, nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestParkedSidesHoldNoBuffer: a new pair with nothing to read parks both sides at once, and
// a parked side holds no read buffer; after traffic, the sides park again within two park
// periods, again without buffers.
func TestParkedSidesHoldNoBuffer(t *testing.T) {
	if !parkingSupported {
		t.Skip("no parking on this system")
	}
	defer goleak.VerifyNone(t)
	tp := startPair(t, Options{CloseTimeout: time.Second, WriteTimeout: time.Second})
	defer func() {
		tp.close()
		<-tp.done
	}()
	waitParked := func(within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !(tp.p.client.parked.Load() && tp.p.backend.parked.Load()) {
			if time.Now().After(deadline) {
				t.Fatalf("sides not parked within %v", within)
			}
			time.Sleep(10 * time.Millisecond)
		}
		lockLot() // the parking pumps' writes happen before this, the resumes after it
		held := tp.p.client.br != nil || tp.p.backend.br != nil
		unlockLot()
		if held {
			t.Fatal("a parked side holds a read buffer")
		}
	}
	waitParked(time.Second)

	msg := bytes.Repeat([]byte("x"), 3000)
	tp.client.Write(clientFrame(wsframe.OpBinary, msg))
	tp.backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("hi")))
	var hb [wsframe.MaxHeaderSize]byte
	for _, c := range []struct {
		conn net.Conn
		want int64
	}{{tp.backend, 3000}, {tp.client, 2}} {
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		h, err := wsframe.ReadHeader(c.conn, &hb)
		if err != nil || h.Length != c.want {
			t.Fatalf("forwarded header %+v, %v; want length %d", h, err, c.want)
		}
		if _, err := c.conn.Read(make([]byte, h.Length)); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(2*parkAfter + time.Second)
}

// TestStartParksIdleSides: Start parks a plain side with nothing to read without starting a
// pump for it (no goroutine to find nothing and end), and a side whose handshake reader
// already holds a frame gets its pump at once; both relay as usual afterwards.
func TestStartParksIdleSides(t *testing.T) {
	if !parkingSupported {
		t.Skip("no parking on this system")
	}
	defer goleak.VerifyNone(t)
	for _, early := range []bool{false, true} {
		t.Run(fmt.Sprintf("early=%v", early), func(t *testing.T) {
			cg, ct := socketPair(t)
			bg, bt := socketPair(t)
			defer ct.Close()
			defer bt.Close()
			cr := bufio.NewReaderSize(cg, readerSize)
			if early {
				// A frame that came with the upgrade request, in the handshake's reader.
				ct.Write(clientFrame(wsframe.OpText, []byte("early")))
				if _, err := cr.Peek(1); err != nil {
					t.Fatal(err)
				}
			}
			p := NewPair(cg, cr, bg, bufio.NewReaderSize(bg, readerSize), &Options{CloseTimeout: time.Second, WriteTimeout: time.Second})
			done := make(chan Result, 1)
			before := runtime.NumGoroutine()
			p.Start(func(r Result) { done <- r })
			started := runtime.NumGoroutine() - before // the lot's poller may have started too
			lockLot()
			cp, bp := p.client.parked.Load(), p.backend.parked.Load()
			unlockLot()
			if !bp || cp == early {
				t.Fatalf("parked at start: client %v, backend %v; want client %v, backend true", cp, bp, !early)
			}
			want := 1
			if early {
				want = 2
			}
			if early && started < 1 || started > want {
				t.Fatalf("Start started %d goroutines", started)
			}
			if !early {
				ct.Write(clientFrame(wsframe.OpText, []byte("later")))
			}
			var hb [wsframe.MaxHeaderSize]byte
			bt.SetReadDeadline(time.Now().Add(5 * time.Second))
			h, err := wsframe.ReadHeader(bt, &hb)
			if err != nil || h.Opcode != wsframe.OpText || h.Length != 5 || !h.Masked {
				t.Fatalf("backend got %+v, %v", h, err)
			}
			bt.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("back")))
			ct.SetReadDeadline(time.Now().Add(5 * time.Second))
			if h, err := wsframe.ReadHeader(ct, &hb); err != nil || h.Length != 4 {
				t.Fatalf("client got %+v, %v", h, err)
			}
			ct.Close()
			bt.Close()
			<-done
		})
	}
}
