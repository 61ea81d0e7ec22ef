package proxy

import (
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/wsgate/wsgate/wsframe"
)

// Large backend-to-client payloads go socket to socket with splice(2). Neither side masks
// them (RFC 6455: only clients mask), so the relay need not see the bytes: the kernel moves
// the backend socket's pages into a pipe and from the pipe into the client socket, and the
// two copies through a user-space buffer (a third of the CPU of a 64 KiB relay) are gone.
//
// A chunk moves in two steps, so that the client's write lock is never held while waiting for
// the backend: first the payload is spliced from the backend into the pipe, waiting for the
// backend as a buffered read would; then, under the write lock, the header (and any payload
// bytes the read buffer already held) is sent with MSG_MORE and the pipe is spliced into the
// client. A pipe slot holds one packet's piece, so a backend that writes in many small packets
// can fill the pipe's slots before the chunk is in: the chunk then takes the buffered path
// (the pipe is read back), and the frames leave the same as without splicing either way.
//
// Pipes are pooled with their descriptors: at most maxSplicers exist at once (two descriptors
// each), and an unused one is closed after pipeIdle. Past the cap, or if a pipe cannot be
// made, the chunk takes the buffered path.

// spliceSupported reports whether relayFrames may splice on this system.
const spliceSupported = true

// testSplice, when set (by tests, before any pair runs), counts the payload bytes that went
// through pipes and the chunks that fell back to a copy.
var testSplice *spliceStats

type spliceStats struct{ bytes, fallbacks atomic.Int64 }

// spliceMin is the smallest payload piece worth splicing: below it, a copy costs less than the
// pipe's two extra syscalls.
const spliceMin = 16 << 10

// pipeSize is the capacity asked of each pipe (F_SETPIPE_SZ): 64 slots, so a chunk fits in
// one go even when the backend's packets arrive in small pieces. Only the bytes in flight use
// memory. If the kernel refuses (a user over pipe-user-pages-soft), the default 16 slots do,
// with shorter fragments when they run out.
var pipeSize = 256 << 10 // a variable for tests (a one-slot pipe)

const (
	maxSplicers = 256              // pipes open at once, pooled or in use
	pipeIdle    = 10 * time.Second // a pooled pipe unused this long is closed
)

// splicer is one pipe and the RawConn callbacks that move a chunk through it.
type splicer struct {
	src      *side // fill: the side read from, seen as its bytes move (not idle to the sweep)
	r, w     int   // the pipe's read and write ends
	held     int   // bytes in the pipe
	taken    int   // drain: bytes read back from the pipe
	want     int   // fill: bytes still to take from the source
	full     bool
	err      error
	hdr      []byte       // send: the header and buffered payload still to write
	dl       blockedWrite // send: arms the destination's write deadline when its buffer fills
	fillFn   func(fd uintptr) bool
	sendFn   func(fd uintptr) bool
	lastUsed time.Duration // monoNow when it went back to the pool
}

var splicers struct {
	mu       sync.Mutex
	free     []*splicer // most recently used last
	open     int        // pipes open, free or in use
	trimming bool       // the trim timer is armed
}

// getSplicer returns a pooled or new pipe, or nil if none may be had (the caller copies).
func getSplicer() *splicer {
	s := &splicers
	s.mu.Lock()
	if n := len(s.free); n > 0 {
		sp := s.free[n-1]
		s.free[n-1] = nil
		s.free = s.free[:n-1]
		s.mu.Unlock()
		return sp
	}
	if s.open >= maxSplicers {
		s.mu.Unlock()
		return nil
	}
	s.open++
	s.mu.Unlock()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		s.mu.Lock()
		s.open--
		s.mu.Unlock()
		return nil
	}
	syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), fSetPipeSz, uintptr(pipeSize)) // best effort
	sp := &splicer{r: fds[0], w: fds[1]}
	sp.fillFn, sp.sendFn = sp.fill, sp.send
	return sp
}

// fSetPipeSz is F_SETPIPE_SZ (not in package syscall).
const fSetPipeSz = 1031

// put returns sp to the pool, or closes its pipe if it still holds bytes (a chunk that
// failed half way).
func (sp *splicer) put() {
	sp.hdr, sp.err, sp.src = nil, nil, nil
	s := &splicers
	if sp.held != 0 {
		syscall.Close(sp.r)
		syscall.Close(sp.w)
		s.mu.Lock()
		s.open--
		s.mu.Unlock()
		return
	}
	sp.lastUsed = monoNow()
	s.mu.Lock()
	s.free = append(s.free, sp)
	if !s.trimming {
		s.trimming = true
		time.AfterFunc(pipeIdle, trimSplicers)
	}
	s.mu.Unlock()
}

// trimSplicers closes the pooled pipes unused for pipeIdle, and runs again while any are left.
func trimSplicers() {
	s := &splicers
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := monoNow() - pipeIdle
	i := 0
	for i < len(s.free) && s.free[i].lastUsed <= cut { // oldest first
		i++
	}
	for _, sp := range s.free[:i] {
		syscall.Close(sp.r)
		syscall.Close(sp.w)
	}
	s.open -= i
	n := copy(s.free, s.free[i:])
	clear(s.free[n:])
	s.free = s.free[:n]
	if s.trimming = n > 0; s.trimming {
		time.AfterFunc(pipeIdle, trimSplicers)
	}
}

const (
	spliceMove     = 0x1 // SPLICE_F_MOVE
	spliceNonblock = 0x2 // SPLICE_F_NONBLOCK
)

// splice moves up to n bytes from in to out without blocking.
func splice(in, out, n int) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), spliceMove|spliceNonblock)
	return int(r), e
}

// fill is the source's RawConn.Read callback: it splices into the pipe until want is met, the
// pipe is full (full, with bytes held), the source ends (err) or it must wait (false).
func (sp *splicer) fill(fd uintptr) bool {
	again := false
	for sp.want > 0 {
		n, e := splice(int(fd), sp.w, sp.want)
		switch e {
		case 0:
			if n == 0 {
				sp.err = io.ErrUnexpectedEOF // the frame was cut short
				return true
			}
			sp.held += n
			sp.want -= n
			sp.src.markSeen() // a slow sender's piece may take many sweeps to come in
			again = false
		case syscall.EINTR:
		case syscall.EAGAIN:
			// Either the socket is drained or the pipe has no free slot. If the socket
			// has bytes, try once more (they may have just arrived); if they still do not
			// move, it is the pipe.
			if sp.held == 0 || inq(int(fd)) == 0 {
				return false
			}
			if !again {
				again = true
				continue
			}
			sp.full = true
			return true
		default:
			sp.err = os.NewSyscallError("splice", e)
			return true
		}
	}
	return true
}

// inq returns the bytes waiting in socket fd's receive queue (SIOCINQ, the same as
// FIONREAD and TIOCINQ), or 0.
func inq(fd int) int {
	var n int32
	_, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return 0
	}
	return int(n)
}

// send is the destination's RawConn.Write callback: it writes hdr (with MSG_MORE when the
// pipe's bytes follow, so they leave together) and splices the pipe out, reporting false to
// wait for writability.
func (sp *splicer) send(fd uintptr) bool {
	for len(sp.hdr) > 0 {
		flags := uintptr(0)
		if sp.held > 0 {
			flags = syscall.MSG_MORE
		}
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&sp.hdr[0])), uintptr(len(sp.hdr)), flags, 0, 0)
		switch e {
		case 0:
			sp.hdr = sp.hdr[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			sp.dl.blocked()
			return false
		default:
			sp.err = os.NewSyscallError("sendto", e)
			return true
		}
	}
	for sp.held > 0 {
		n, e := splice(sp.r, int(fd), sp.held)
		switch e {
		case 0:
			sp.held -= n
		case syscall.EINTR:
		case syscall.EAGAIN:
			sp.dl.blocked()
			return false
		default:
			sp.err = os.NewSyscallError("splice", e)
			return true
		}
	}
	return true
}

// spliceChunk moves the next piece of a frame's payload, oh.Length bytes, from src to dst as
// one frame with header oh: the bytes src.br holds, then the rest from src's socket through
// sp's pipe (or, if the pipe fills first, through out). It reports false if the relay must
// stop (the failure is handled). out is scratch for the header
// and the buffered bytes; sp goes back to the pool.
func (p *Pair) spliceChunk(src, dst *side, sp *splicer, out *[bufSize]byte, oh wsframe.Header) bool {
	defer sp.put()
	k := src.br.Buffered()
	io.ReadFull(src.br, out[wsframe.MaxHeaderSize:wsframe.MaxHeaderSize+k]) // buffered: cannot fail
	sp.want, sp.full, sp.src = int(oh.Length)-k, false, src
	err := src.rawRead(sp.fillFn)
	if err == nil {
		err = sp.err
	}
	if err != nil {
		p.readFailed(src, err)
		return false
	}
	m := k
	if sp.full {
		// The pipe ran out of slots before the chunk was in (the backend's bytes came in
		// many small packets, a slot each): take them back and read the rest the buffered
		// way, so the frames are the same as without splicing.
		if err := sp.drain(out[wsframe.MaxHeaderSize+k:]); err != nil {
			p.readFailed(src, err)
			return false
		}
		m = int(oh.Length)
		if _, err := io.ReadFull(src, out[wsframe.MaxHeaderSize+k+sp.taken:wsframe.MaxHeaderSize+m]); err != nil {
			p.readFailed(src, err)
			return false
		}
		if testSplice != nil {
			testSplice.fallbacks.Add(1)
		}
	} else if testSplice != nil {
		testSplice.bytes.Add(int64(sp.held))
	}
	hs := oh.Size()
	oh.Encode(out[wsframe.MaxHeaderSize-hs:])
	sp.hdr = out[wsframe.MaxHeaderSize-hs : wsframe.MaxHeaderSize+m]

	dst.wmu.Lock()
	if dst.flag(wClosing) {
		dst.wmu.Unlock()
		return false
	}
	p.armWriteDeadline(dst)
	sp.dl = blockedWrite{s: dst}
	err = dst.w.raw.Write(sp.sendFn)
	sp.dl.end()
	sp.dl = blockedWrite{}
	if err == nil {
		err = sp.err
	}
	dst.wmu.Unlock()
	if err != nil {
		p.writeFailed(dst, err)
		return false
	}
	return true
}

// drain reads what the pipe holds into b (taken says how much), after a fill that found it
// full.
func (sp *splicer) drain(b []byte) error {
	sp.taken = 0
	for sp.held > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(sp.r), uintptr(unsafe.Pointer(&b[sp.taken])), uintptr(sp.held))
		switch e {
		case 0:
			sp.held -= int(n)
			sp.taken += int(n)
		case syscall.EINTR:
		default:
			return os.NewSyscallError("read", e) // EAGAIN included: the bytes are in the pipe
		}
	}
	return nil
}
