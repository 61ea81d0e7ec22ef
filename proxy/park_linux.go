package proxy

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
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
// together with the last data would be noticed only when the sweep asks the side to park.
//
// The poller runs only while a side is in the set: it ends when the last one is forgotten and
// is started again by the next.
//
// The lot also decides when a hot side (one with data flowing, its pump waiting in the
// runtime's poller) has been idle long enough to park: a sweep every parkAfter/2 looks at
// each hot side's seen flag, and asks a side that had no data for parkSweeps sweeps in a row
// to park, by a read deadline in the past. A busy side costs the sweep one flag test, and
// never a timer or a wake-up of its own.
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

	hot      []*side     // hot sides, in no order (side.hotSlot is 1 + the index)
	sweeper  *time.Timer // runs sweep; armed while hot is not empty
	sweeping bool        // sweeper is armed or running
	requests uint64      // park requests made (for tests)
}

// Sweep timing: a side is asked to park after parkSweeps sweeps in a row without data, 1 to
// 1.5 parkAfter after its last data.
const (
	sweepEvery = parkAfter / 2
	parkSweeps = 2
	// sweepChunk bounds how many sides a sweep looks at before it lets parks and wakes take
	// the lock.
	sweepChunk = 512
)

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

// addHot puts side s, now relaying, on the sweep. A plain side is also registered for the
// peer's shutdown or a socket error only (see shutdownSeen); best effort: if the socket cannot
// be watched, a FIN that comes with data is found when the sweep asks the side to park.
func (l *parkingLot) addHot(s *side) {
	l.mu.Lock()
	if s.w.raw != nil {
		l.watch(s, syscall.EPOLLRDHUP|epollET)
	}
	if s.hotSlot == 0 {
		l.hot = append(l.hot, s)
		s.hotSlot = int32(len(l.hot))
	}
	s.idleSweeps = 0
	s.parkReq.Store(false)
	s.markSeen()
	if !l.sweeping {
		l.sweeping = true
		if l.sweeper == nil {
			l.sweeper = time.AfterFunc(sweepEvery, l.sweep)
		} else {
			l.sweeper.Reset(sweepEvery)
		}
	}
	l.mu.Unlock()
}

// dropHot takes s off the sweep (it parks, or its pump ends).
func (l *parkingLot) dropHot(s *side) {
	l.mu.Lock()
	l.unhot(s)
	l.mu.Unlock()
}

// unhot removes s from hot. Called with mu held.
func (l *parkingLot) unhot(s *side) {
	i := int(s.hotSlot) - 1
	if i < 0 {
		return
	}
	last := len(l.hot) - 1
	if i != last {
		l.hot[i] = l.hot[last]
		l.hot[i].hotSlot = int32(i + 1)
	}
	l.hot[last] = nil
	l.hot = l.hot[:last]
	s.hotSlot = 0
}

// sweep looks at every hot side: one with no data for parkSweeps sweeps in a row is asked to
// park (its pump wakes on a read deadline in the past and parks if nothing came meanwhile and
// no frame is half read). A side whose request was lost to a race is asked again at the next
// sweep. The sweep rearms itself while hot sides remain.
func (l *parkingLot) sweep() {
	var ended []*Pair // pairs that ended while their sides were asked to park
	l.mu.Lock()
	for i := 0; i < len(l.hot); i++ {
		if i > 0 && i%sweepChunk == 0 {
			l.mu.Unlock() // sides that move meanwhile may be looked at twice or not at all
			l.mu.Lock()
			if i >= len(l.hot) {
				break
			}
		}
		s := l.hot[i]
		if s.seen.Load() {
			s.seen.Store(false)
			s.idleSweeps = 0
			continue
		}
		if s.idleSweeps < parkSweeps {
			s.idleSweeps++
		}
		if s.idleSweeps < parkSweeps || s.pair.ended.Load() {
			continue // an ended pair's read deadline is finish's linger
		}
		s.parkReq.Store(true)
		s.conn.SetReadDeadline(time.Unix(1, 0))
		l.requests++
		if s.pair.ended.Load() {
			ended = append(ended, s.pair)
		}
	}
	if len(l.hot) > 0 {
		l.sweeper.Reset(sweepEvery)
	} else {
		l.sweeping = false
	}
	l.mu.Unlock()
	// finish ran between the ended check and the deadline: put its linger deadline back.
	for _, p := range ended {
		p.restoreLinger(&p.client)
		p.restoreLinger(&p.backend)
	}
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

// forget drops s's slot and takes it off the sweep when its pump has ended for good; the last
// one stops the poller.
func (l *parkingLot) forget(s *side) {
	if !s.registered && !s.hot {
		return
	}
	s.hot = false
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unhot(s)
	if !s.registered {
		return
	}
	if fd := int(s.w.fd); fd < len(l.slots) && l.slots[fd] == s {
		l.slots[fd] = nil
	}
	s.registered = false
	l.watched--
	if l.watched == 0 && l.running {
		l.file.SetReadDeadline(time.Unix(1, 0)) // the poller sees nothing watched and ends
	}
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
		n, werr = epollWaitNow(fd, events[:])
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

// epollWaitNow collects the ready events of epoll instance epfd without waiting (timeout 0).
// It is a raw system call, as the relay's socket reads and writes are (rawio.go): a call that
// cannot block must not tell the scheduler a system call began. syscall.EpollWait does, and
// each time the runtime is idle that wakes its monitor thread (sysmon), which then polls for
// 20 µs to 10 ms: 13% of the CPU in the second after 8,000 connections sent their first
// messages (bench/README.md).
func epollWaitNow(epfd uintptr, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollOneShot is EPOLLONESHOT (the syscall package's constant has the wrong type).
const epollOneShot = syscall.EPOLLONESHOT

// lockLot and unlockLot let tests look at parked sides under the lot's lock.
func lockLot()   { lot.mu.Lock() }
func unlockLot() { lot.mu.Unlock() }

// epollET is EPOLLET as the event mask's type (the syscall package's constant is negative).
const epollET = 1 << 31
