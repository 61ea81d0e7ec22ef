package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
)

// TestEchoesFrames drives the backend with a separately written client (coder/websocket):
// text, binary, empty and 64 KiB messages come back as sent, and a close is returned.
func TestEchoesFrames(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String()+"/bench", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	msgs := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello")},
		{websocket.MessageBinary, []byte{0, 1, 2, 255}},
		{websocket.MessageBinary, nil},
		{websocket.MessageBinary, big},
		{websocket.MessageText, []byte("after the big one")},
	}
	for _, m := range msgs {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range msgs {
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(data, m.data) {
			t.Fatalf("message %d: got %v with %d bytes, want %v with %d", i, typ, len(data), m.typ, len(m.data))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// maskedFrames returns n masked binary client frames of size bytes each.
func maskedFrames(n, size int) []byte {
	var b bytes.Buffer
	payload := make([]byte, size)
	for i := 0; i < n; i++ {
		h := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(size), Masked: true, Mask: [4]byte{1, 2, 3, byte(i)}}
		if err := ws.WriteHeader(&b, h); err != nil {
			panic(err)
		}
		p := append([]byte(nil), payload...)
		ws.Cipher(p, h.Mask, 0)
		b.Write(p)
	}
	return b.Bytes()
}

// replay returns a function that echoes the same n masked 64 B frames each time it is called,
// into io.Discard through one reader and writer, and the input's size. Echo ends each call
// with io.EOF at the end of the input.
func replay(n int) (echo func() error, size int) {
	in := maskedFrames(n, 64)
	src := bytes.NewReader(in)
	r := bufio.NewReaderSize(src, 4096)
	w := bufio.NewWriterSize(io.Discard, 4096)
	return func() error {
		src.Reset(in)
		r.Reset(src)
		return Echo(r, w)
	}, len(in)
}

// TestEchoAllocatesNothingPerFrame: the backend shares the generator's core in bench/compare.sh,
// so garbage it makes per frame is CPU taken from the load generator.
func TestEchoAllocatesNothingPerFrame(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled buffers on purpose")
	}
	const frames = 100
	echo, _ := replay(frames)
	run := func() {
		if err := echo(); err != io.EOF {
			t.Fatalf("Echo: %v, want EOF at the end of the input", err)
		}
	}
	run() // fill the payload pool
	allocs := testing.AllocsPerRun(20, run)
	if per := allocs / frames; per >= 0.05 {
		t.Fatalf("%.2f allocations per echoed frame (%.0f per run of %d), want 0", per, allocs, frames)
	}
}

// BenchmarkEcho reports the backend's cost per 64 B frame.
func BenchmarkEcho(b *testing.B) {
	const frames = 100
	echo, size := replay(frames)
	b.ReportAllocs()
	b.SetBytes(int64(size))
	for b.Loop() {
		if err := echo(); err != io.EOF {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*frames), "ns/frame")
}

// TestEchoFlushesAfterAPong: a data frame and a pong that arrive together, with nothing after
// them, get the data frame's echo at once (the pong, which is not answered, must not leave it
// unflushed while the backend waits for more input).
func TestEchoFlushesAfterAPong(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	done := make(chan error, 1)
	go func() {
		defer server.Close()
		done <- Echo(bufio.NewReader(server), bufio.NewWriter(server))
	}()
	in := append(maskedFrames(1, 5), 0x8A, 0x80, 1, 2, 3, 4) // binary frame, then an empty pong
	_ = client.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := client.Write(in); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 7)
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatalf("no echo of the data frame before more input: %v", err)
	}
	if want := []byte{0x82, 5, 0, 0, 0, 0, 0}; !bytes.Equal(got, want) {
		t.Fatalf("echoed % x, want % x", got, want)
	}
	client.Close()
	<-done
}
