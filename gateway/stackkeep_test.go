package gateway

import (
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// TestWorkerWaitKeepsStack checks that a TLS listener's connection worker waiting for its next
// connection keeps the stack its last one grew through garbage collections, where a goroutine waiting
// in a shallow frame has it halved by each (and, during a handshake storm, grown again by the
// next handshake: 3% of the CPU of the wss handshake row). A stack that is shrunk is copied,
// so the address of a local variable of the waiting goroutine tells whether it was.
func TestWorkerWaitKeepsStack(t *testing.T) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// moved grows a goroutine's stack to 32 KiB, lets it wait in wait (for w.work) through
	// three collections, and reports whether its stack was copied meanwhile.
	moved := func(w *connWorkers, wait func()) bool {
		res := make(chan bool)
		go func() {
			var x byte
			growStack(20 << 10) // more than a 16 KiB stack holds, well within 32 KiB
			before := uintptr(unsafe.Pointer(&x))
			wait()
			res <- uintptr(unsafe.Pointer(&x)) != before
		}()
		deadline := time.Now().Add(5 * time.Second)
		for w.free.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // from counted free to parked in the select
		for range 3 {
			runtime.GC()
		}
		w.work <- nil
		return <-res
	}

	// The control: a plain listener's worker, which waits without the kept frame. If its
	// stack is not shrunk either, this runtime does not shrink stacks as the wait expects.
	ctl := newConnWorkers()
	if !moved(ctl, func() { ctl.next(timer) }) {
		t.Skip("the collector did not shrink a shallow waiter's stack: nothing to compare with")
	}
	w := newConnWorkers()
	if moved(w, func() {
		if _, ok := w.nextKeepingStack(timer); !ok {
			t.Error("next reported no connection")
		}
	}) {
		t.Fatal("a worker's stack was shrunk while it waited for a connection: the next handshake grows it again")
	}
}

// growStack uses about n bytes of stack in 1 KiB frames.
//
//go:noinline
func growStack(n int) byte {
	var b [1 << 10]byte
	b[n%len(b)] = byte(n)
	if n <= len(b) {
		return b[0]
	}
	return growStack(n-len(b)) + b[1]
}
