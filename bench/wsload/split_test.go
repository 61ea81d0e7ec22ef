package main

import (
	"bufio"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testcert"
)

// recordEcho is a wss:// echo server for 64 B binary messages that notes how many frames each
// TLS record from the client carried: crypto/tls returns at most one record per Read, and
// every Read here has room for a whole one.
type recordEcho struct {
	ln net.Listener
	wg sync.WaitGroup

	mu      sync.Mutex
	records []int // frames per record, after the upgrade
}

func startRecordEcho(t *testing.T) *recordEcho {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{testcert.TLS(t)}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &recordEcho{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				e.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); e.wg.Wait() })
	return e
}

func (e *recordEcho) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || br.Buffered() != 0 {
		return // the client sends nothing before the 101
	}
	h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + wsGUID))
	fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(h[:]))
	const frame = 2 + 4 + 64 // masked, 64 B payload
	buf := make([]byte, 64<<10)
	var pending []byte
	for {
		n, err := c.Read(buf)
		if n > 0 {
			e.mu.Lock()
			e.records = append(e.records, n/frame)
			e.mu.Unlock()
			pending = append(pending, buf[:n]...)
			var out []byte
			for len(pending) >= frame {
				f := pending[:frame]
				if f[0] != 0x82 || f[1] != 0x80|64 {
					return
				}
				out = append(out, 0x82, 64)
				for i := range 64 {
					out = append(out, f[6+i]^f[2+i%4])
				}
				pending = pending[frame:]
			}
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestSplitSendsARecordPerMessage: with -split every message the generator sends over wss:// is
// a TLS record of its own; without it the messages of a batch share one.
func TestSplitSendsARecordPerMessage(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("split=%v", split), func(t *testing.T) {
			e := startRecordEcho(t)
			o := &options{
				mode: "throughput", url: "wss://" + e.ln.Addr().String() + "/", insecure: true, split: split,
				conns: 2, window: 4, size: 64, duration: 200 * time.Millisecond,
				drain: 2 * time.Second, timeout: 5 * time.Second, dialPar: 2, lagLimit: time.Millisecond,
			}
			res, err := runLoad(o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Msgs < 20 || res.Split != split {
				t.Fatalf("run: %+v", res)
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			var single, multi int
			for _, f := range e.records {
				switch {
				case f == 1:
					single++
				case f > 1:
					multi++
				}
			}
			if split && (multi != 0 || uint64(single) < res.Sent) {
				t.Fatalf("-split: %d records of one message, %d of several, for %d messages sent; want one record per message", single, multi, res.Sent)
			}
			if !split && multi == 0 {
				t.Fatalf("no -split: %d records of one message and none of several; want batches in one record", single)
			}
		})
	}
}

func TestSplitNeedsWSS(t *testing.T) {
	o := &options{mode: "throughput", url: "ws://127.0.0.1:1/", split: true, conns: 1, window: 1, size: 64,
		duration: time.Second, timeout: time.Second, dialPar: 1}
	if _, err := runLoad(o); err == nil || err.Error() != "-split needs a wss:// URL (it makes every message a TLS record of its own)" {
		t.Fatalf("runLoad with -split over ws:// returned %v", err)
	}
}
