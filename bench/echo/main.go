// Command echo is a fast WebSocket echo backend for benchmarks, built on github.com/gobwas/ws
// (independent of wsgate's own codec). It accepts an upgrade on any path and echoes every frame
// back with the same opcode and FIN bit (so fragmented messages come back fragmented the same
// way), answers pings, and returns the close frame it receives.
//
//	go run ./bench/echo -addr 127.0.0.1:8001 [-tls-addr 127.0.0.1:8444 -cert c.pem -key k.pem]
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"

	"github.com/gobwas/ws"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

func main() {
	addr := flag.String("addr", "127.0.0.1:8001", "plain ws:// listen address")
	tlsAddr := flag.String("tls-addr", "", "optional wss:// listen address (needs -cert, -key)")
	cert := flag.String("cert", "", "PEM certificate for -tls-addr")
	key := flag.String("key", "", "PEM key for -tls-addr")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	go serve(ln)
	fmt.Printf("listening on %s\n", ln.Addr())
	if *tlsAddr != "" {
		kp, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatal(err)
		}
		tln, err := tls.Listen("tcp", *tlsAddr, &tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: []string{"http/1.1"}})
		if err != nil {
			log.Fatal(err)
		}
		go serve(tln)
		fmt.Printf("listening on %s (tls)\n", tln.Addr())
	}
	os.Stdout.Sync()
	select {}
}

func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			log.Fatal(err)
		}
		go handle(c)
	}
}

// handle upgrades c (any path is accepted) and echoes until close or error. A connection holds
// no buffer while idle: the reader and writer are created after the upgrade but are small, and
// payload buffers come from a pool per frame.
func handle(c net.Conn) {
	defer c.Close()
	if _, err := ws.Upgrade(c); err != nil {
		return
	}
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	if err := Echo(br, bw); err != nil && err != io.EOF {
		return
	}
}

// Echo copies frames read from r (client frames, masked) back to w unmasked, flushing whenever
// no further input is already buffered, so pipelined messages are answered in one write. It
// allocates nothing per frame: the headers are read and written through buffers of its own
// (ws.ReadHeader and ws.WriteHeader allocate one each), and runs of small data frames are
// echoed straight from r's buffer into w's (echoRun), so the backend's share of the
// generator's core is no larger than it must be.
func Echo(r *bufio.Reader, w *bufio.Writer) error {
	return echo(r, w, wholeFrame, chunkSize)
}

// Frames up to wholeFrame bytes are read whole and written with one Write; longer ones are
// streamed through chunkSize bytes at a time, so a frame costs the backend at most that much
// memory, whatever length its header claims.
const (
	wholeFrame = 1 << 20
	chunkSize  = 256 << 10
)

// echo is Echo with the whole-frame limit and the streaming chunk as parameters (for tests).
func echo(r *bufio.Reader, w *bufio.Writer, whole, chunk int64) error {
	hb := new([2 * ws.MaxHeaderSize]byte) // header buffers: reading, then writing
	rb, wb := hb[:ws.MaxHeaderSize-2:ws.MaxHeaderSize-2], hb[ws.MaxHeaderSize:]
	for {
		if r.Buffered() == 0 {
			if _, err := r.Peek(1); err != nil { // one read, as much as has arrived
				return err
			}
		}
		if echoRun(r, w) > 0 {
			if r.Buffered() == 0 {
				if err := w.Flush(); err != nil {
					return err
				}
			}
			continue
		}
		h, err := ws.ReadHeaderBuffer(r, rb)
		if err != nil {
			return err
		}
		if h.Length > 64<<20 {
			return fmt.Errorf("frame of %d bytes too large", h.Length)
		}
		if h.Length > whole && h.OpCode&0x8 == 0 { // control frames are at most 125 bytes
			err = echoStreamed(r, w, h, wb, chunk)
		} else {
			err = echoWhole(r, w, h, wb)
		}
		if err != nil {
			return err
		}
		if h.OpCode == ws.OpClose {
			return w.Flush()
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// echoRun echoes the run of small data frames at the front of r's buffer without taking them
// out one by one: each frame that is masked, whole in the buffer, of a 7- or 16-bit length in
// minimal form, and fits in w's free space is written there unmasked, with its first byte
// (FIN, RSV, opcode) as it came. It stops at anything else, leaving it to the frame-by-frame
// path, whose output is the same, and returns how many frames it echoed.
func echoRun(r *bufio.Reader, w *bufio.Writer) int {
	b, _ := r.Peek(r.Buffered())
	out := w.AvailableBuffer()
	i, frames := 0, 0
	for len(b)-i >= 2 {
		b0, b1 := b[i], b[i+1]
		if b0&0x08 != 0 || b1&0x80 == 0 {
			break // a control frame, or an unmasked one
		}
		hs, n := 2, int(b1&0x7F)
		if n == 127 {
			break
		}
		if n == 126 {
			if len(b)-i < 4 {
				break
			}
			if n = int(binary.BigEndian.Uint16(b[i+2:])); n < 126 {
				break // not minimal: the frame-by-frame path writes the minimal form
			}
			hs = 4
		}
		if len(b)-i < hs+4+n || len(out)+hs+n > cap(out) {
			break
		}
		out = append(out, b[i:i+hs]...)
		out[len(out)-hs+1] &^= 0x80 // no mask bit
		start := len(out)
		out = append(out, b[i+hs+4:i+hs+4+n]...)
		ws.Cipher(out[start:], [4]byte(b[i+hs:i+hs+4]), 0)
		i += hs + 4 + n
		frames++
	}
	if frames > 0 {
		_, _ = w.Write(out) // w's own free space: it takes it all without writing
		_, _ = r.Discard(i)
	}
	return frames
}

// echoWhole echoes frame h, whose header has been read, from one pooled buffer: a ping as a
// pong, a pong not at all.
func echoWhole(r *bufio.Reader, w *bufio.Writer, h ws.Header, wb []byte) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	if int64(cap(*bp)) < h.Length {
		*bp = make([]byte, h.Length)
	}
	p := (*bp)[:h.Length]
	if _, err := io.ReadFull(r, p); err != nil {
		return err
	}
	out := ws.Header{Fin: h.Fin, Rsv: h.Rsv, OpCode: h.OpCode, Length: h.Length}
	switch h.OpCode {
	case ws.OpPing:
		out.OpCode = ws.OpPong
	case ws.OpPong:
		return nil
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	if err := ws.WriteHeaderBuffer(w, out, wb); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// echoStreamed echoes data frame h, whose header has been read, chunk bytes at a time.
func echoStreamed(r *bufio.Reader, w *bufio.Writer, h ws.Header, wb []byte, chunk int64) error {
	out := ws.Header{Fin: h.Fin, Rsv: h.Rsv, OpCode: h.OpCode, Length: h.Length}
	if err := ws.WriteHeaderBuffer(w, out, wb); err != nil {
		return err
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	if int64(cap(*bp)) < chunk {
		*bp = make([]byte, chunk)
	}
	buf := (*bp)[:chunk]
	for off := int64(0); off < h.Length; {
		p := buf[:min(chunk, h.Length-off)]
		if _, err := io.ReadFull(r, p); err != nil {
			return err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, int(off))
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
		off += int64(len(p))
	}
	return nil
}
