package main

import (
	"errors"
	"testing"
	"time"
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
