package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestWindowKeepsSlotsInFlight runs a writer and a reader over a window of 8 slots, the way
// windowWriteLoop and readLoop use it: the writer never has more than 8 messages in flight,
// no freed slot is lost (a lost wake-up would stall the run), and all 8 are free at the end.
func TestWindowKeepsSlotsInFlight(t *testing.T) {
	const slots, total = 8, 200_000
	w := newWindow(slots)
	wire := make(chan struct{}, slots) // messages in flight; one beyond the window finds it full
	stop := make(chan struct{})
	readerDone, writerDone := make(chan int), make(chan error, 1)
	go func() { // the reader: hands back the slots of every message that has arrived, at once
		got := 0
		for got < total {
			<-wire
			batch := 1
			for len(wire) > 0 {
				<-wire
				batch++
			}
			got += batch
			w.give(batch)
		}
		readerDone <- got
	}()
	go func() { // the writer
		for sent := 0; sent < total; {
			n := w.take(stop)
			if n == 0 {
				writerDone <- nil
				return
			}
			use := min(n, total-sent)
			for i := 0; i < use; i++ {
				select {
				case wire <- struct{}{}:
				default:
					writerDone <- errTooMany
					return
				}
			}
			sent += use
			w.give(n - use) // slots beyond the last message go back unused
		}
		writerDone <- nil
	}()
	timeout := time.After(20 * time.Second)
	select {
	case err := <-writerDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-timeout:
		close(stop)
		t.Fatal("the run stalled: a freed slot did not wake the writer")
	}
	select {
	case got := <-readerDone:
		if got != total {
			t.Fatalf("reader got %d messages, want %d", got, total)
		}
	case <-timeout:
		t.Fatal("the reader did not get every message")
	}
	if n := w.take(stop); n != slots {
		t.Fatalf("after the run %d slots are free, want all %d", n, slots)
	}
	w.give(slots)
	close(stop)
	if n := w.take(stop); n != 0 {
		t.Fatalf("take after stop returned %d slots, want 0: the writer must stop even with slots free", n)
	}
}

var errTooMany = errors.New("more messages in flight than the window has slots")

// TestThroughputKeepsWindow: in throughput mode a connection has exactly -window messages
// unanswered at a time, whoever sends them: the reader itself (refill) over ws://, and over
// wss:// while the window is at most readerSendMax bytes; a writer goroutine over wss://
// beyond that. The server answers in bursts: it waits for a full window, checks that nothing
// beyond it arrives within 30 ms, then echoes the window. A sender that overran the window
// would be caught by that check; one that lost a slot would stall the run.
func TestThroughputKeepsWindow(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secure bool
		size   int
	}{{"ws", false, 64}, {"wss", true, 64}, {"wss-writer", true, readerSendMax / 3}} {
		secure := tc.secure
		t.Run(tc.name, func(t *testing.T) {
			const window = 4
			var over atomic.Int64
			up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := up.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer c.Close()
				msgs := make(chan []byte, 4*window)
				go func() {
					defer close(msgs)
					for {
						_, m, err := c.ReadMessage()
						if err != nil {
							return
						}
						msgs <- m
					}
				}()
				for {
					batch := make([][]byte, 0, window)
					for len(batch) < window {
						m, ok := <-msgs
						if !ok {
							return
						}
						batch = append(batch, m)
					}
					select {
					case _, ok := <-msgs:
						if !ok {
							return
						}
						over.Add(1)
					case <-time.After(30 * time.Millisecond):
					}
					for _, m := range batch {
						if c.WriteMessage(websocket.BinaryMessage, m) != nil {
							return
						}
					}
				}
			})
			var srv *httptest.Server
			if secure {
				srv = httptest.NewTLSServer(h)
			} else {
				srv = httptest.NewServer(h)
			}
			t.Cleanup(srv.Close)
			o := testOptions(srv, 2)
			o.window, o.size = window, tc.size
			if secure {
				o.url = "wss" + strings.TrimPrefix(srv.URL, "https") + "/"
				o.insecure = true
			}
			res, err := runLoad(o)
			if err != nil {
				t.Fatal(err)
			}
			if n := over.Load(); n != 0 {
				t.Fatalf("%d messages arrived beyond a full window of %d", n, window)
			}
			if res.Errors != 0 || res.Msgs < 4*window {
				t.Fatalf("want at least %d echoes in the measured part and no errors: %+v", 4*window, res)
			}
		})
	}
}
