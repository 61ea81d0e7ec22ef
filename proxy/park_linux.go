package proxy

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

// The parking lot: a pump whose connection has been idle for parkAfter ends its goroutine
// and leaves the socket registered, one-shot, in an epoll instance of ours. A single poller
// goroutine, which itself waits in the Go runtime's netpoller on the epoll descriptor, starts
// a new pump goroutine when the socket becomes readable. An idle pair therefore holds no
// goroutine, no stack and no buffer: only its structs and the kernel's socket state.
//
// A plain TCP side with data flowing is also in the set, edge-triggered for EPOLLRDHUP only:
// the relay trusts a short read to mean "drained" (it does not read again to see EAGAIN), and
// the runtime's poller does not say when the readiness it woke a pump for also carried the
// peer's FIN. The lot tells the pump instead (shutdownSeen): without it, a FIN that arrives
// together with the last data would be noticed only at the next park deadline.
//
// The poller runs only while a side is in the set: it ends when the last one is forgotten and
// is started again by the next.
type parkingLot struct {
	mu      sync.Mutex
	file    *os.File // the epoll descriptor, wrapped so the poller can wait on it
	raw     syscall.RawConn
	epfd    int
	err     error // creating the epoll instance failed: parking is off
	running bool  // the poller goroutine is alive
	parked  int   // sides parked now
	watched int   // sides in the epoll set (parked or watched for shutdown)
	slots   []*side
}

var lot parkingLot

// parkingSupported reports whether pumps can be parked on this system.
const parkingSupported = true

func (l *parkingLot) setup() error {
	if l.file != nil || l.err != nil {
		return l.err
	}
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err == nil {
		err = syscall.SetNonblock(fd, true)
	}
	if err != nil {
		l.err = err
		return err
	}
	l.epfd = fd
	l.file = os.NewFile(uintptr(fd), "wsgate-epoll")
	l.raw, l.err = l.file.SyscallConn()
	return l.err
}

// park registers s's socket one-shot for readability and counts it parked. The caller has
// set s.parked; the poller clears it (compare-and-swap) when it wakes s. It reports false if
// the socket cannot be watched, in which case the caller waits in the runtime's poller as
// usual.
func (l *parkingLot) park(s *side) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.watch(s, syscall.EPOLLIN|syscall.EPOLLRDHUP|epollOneShot) {
		return false
	}
	l.parked++
	return true
}

// watchShutdown registers plain side s, now relaying, for the peer's shutdown or a socket
// error only (see shutdownSeen). Best effort: if the socket cannot be watched, a FIN that
// comes with data is found at the next park deadline.
func (l *parkingLot) watchShutdown(s *side) {
	l.mu.Lock()
	l.watch(s, syscall.EPOLLRDHUP|epollET)
	l.mu.Unlock()
}

// watch adds s's socket to the epoll set, or changes its events, and starts the poller if
// needed. Called with mu held.
func (l *parkingLot) watch(s *side, events uint32) bool {
	if l.setup() != nil {
		return false
	}
	fd := int(s.w.fd)
	for fd >= len(l.slots) {
		l.slots = append(l.slots, nil)
	}
	l.slots[fd] = s
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	op := syscall.EPOLL_CTL_MOD
	if !s.registered {
		op = syscall.EPOLL_CTL_ADD
	}
	err := syscall.EpollCtl(l.epfd, op, fd, &ev)
	switch {
	case err == syscall.ENOENT && op == syscall.EPOLL_CTL_MOD:
		err = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	case err == syscall.EEXIST && op == syscall.EPOLL_CTL_ADD:
		err = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
	}
	if err != nil {
		l.slots[fd] = nil
		return false
	}
	if !s.registered {
		s.registered = true
		l.watched++
	}
	if !l.running {
		l.running = true
		l.file.SetReadDeadline(time.Time{})
		go l.poll()
	}
	return true
}

// woken counts one side less parked.
func (l *parkingLot) woken() {
	l.mu.Lock()
	l.parked--
	l.mu.Unlock()
}

// forget drops s's slot when its pump has ended for good; the last one stops the poller.
func (l *parkingLot) forget(s *side) {
	if !s.registered {
		return
	}
	l.mu.Lock()
	if fd := int(s.w.fd); fd < len(l.slots) && l.slots[fd] == s {
		l.slots[fd] = nil
	}
	s.registered = false
	l.watched--
	if l.watched == 0 && l.running {
		l.file.SetReadDeadline(time.Unix(1, 0)) // the poller sees nothing watched and ends
	}
	l.mu.Unlock()
}

// Parked reports how many connection sides are parked now (no goroutine, no buffer).
func Parked() int {
	lot.mu.Lock()
	defer lot.mu.Unlock()
	return lot.parked
}

// poll is the poller goroutine: it wakes parked sides whose sockets became readable, tells
// relaying sides about their peer's shutdown, and ends when nothing is watched.
func (l *parkingLot) poll() {
	type wakeup struct {
		s   *side
		hup bool // the peer shut down, or the socket failed
	}
	var (
		events [128]syscall.EpollEvent
		n      int
		werr   error
		wake   []wakeup
	)
	fn := func(fd uintptr) bool {
		n, werr = syscall.EpollWait(int(fd), events[:], 0)
		if werr == syscall.EINTR {
			n, werr = 0, nil
			return true
		}
		return n > 0 || werr != nil
	}
	for {
		err := l.raw.Read(fn)
		l.mu.Lock()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) || werr != nil {
			// Cannot happen with a valid epoll descriptor; do not spin.
			l.running = false
			l.mu.Unlock()
			return
		}
		wake = wake[:0]
		for _, ev := range events[:n] {
			if fd := int(ev.Fd); fd < len(l.slots) && l.slots[fd] != nil {
				wake = append(wake, wakeup{l.slots[fd], ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0})
			}
		}
		n = 0
		l.mu.Unlock()
		for i, wk := range wake {
			if s := wk.s; s.parked.CompareAndSwap(true, false) {
				l.woken()
				go s.pair.resume(s)
			} else if wk.hup && s.w.raw != nil {
				s.shutdownSeen() // a plain side relaying (TLS sides are only ever parked here)
			}
			wake[i] = wakeup{}
		}
		l.mu.Lock()
		if l.watched == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			l.file.SetReadDeadline(time.Time{})
		}
		l.mu.Unlock()
	}
}

// epollOneShot is EPOLLONESHOT (the syscall package's constant has the wrong type).
const epollOneShot = syscall.EPOLLONESHOT

// lockLot and unlockLot let tests look at parked sides under the lot's lock.
func lockLot()   { lot.mu.Lock() }
func unlockLot() { lot.mu.Unlock() }

// epollET is EPOLLET as the event mask's type (the syscall package's constant is negative).
const epollET = 1 << 31
