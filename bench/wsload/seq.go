package main

import (
	"encoding/binary"
	"time"
)

// Every load message starts with a 16-byte header: an 8-byte sequence number (per connection,
// from 0) and an 8-byte timestamp (nanoseconds since the run's base time: the actual send time
// in throughput mode, the scheduled send time in rate mode). The rest is filler.
const msgHeader = 16

func putHeader(p []byte, seq uint64, ts time.Duration) {
	binary.BigEndian.PutUint64(p[0:8], seq)
	binary.BigEndian.PutUint64(p[8:16], uint64(ts))
}

func getHeader(p []byte) (seq uint64, ts time.Duration) {
	return binary.BigEndian.Uint64(p[0:8]), time.Duration(binary.BigEndian.Uint64(p[8:16]))
}

// seqChecker classifies echoed sequence numbers of one connection. Messages are sent in
// sequence order on one TCP stream, so a correct echo returns them in the same order.
//   - an echo after a gap marks the skipped numbers missing;
//   - a missing number arriving later is counted reordered (and is no longer missing);
//   - a number already seen (or never sent) is counted duplicate.
//
// After the run, lost = still missing + sent numbers past the highest echoed one.
type seqChecker struct {
	next      uint64 // highest seen + 1
	missing   map[uint64]struct{}
	gapLost   uint64 // gaps too large to track individually
	dup       uint64
	reordered uint64
	unique    uint64 // distinct sequence numbers received
}

const maxTrackedGap = 1 << 16

func (s *seqChecker) see(seq uint64) {
	switch {
	case seq == s.next:
		s.next++
		s.unique++
	case seq > s.next:
		gap := seq - s.next
		if gap > maxTrackedGap {
			s.gapLost += gap
		} else {
			if s.missing == nil {
				s.missing = make(map[uint64]struct{})
			}
			for i := s.next; i < seq; i++ {
				s.missing[i] = struct{}{}
			}
		}
		s.next = seq + 1
		s.unique++
	default:
		if _, ok := s.missing[seq]; ok {
			delete(s.missing, seq)
			s.reordered++
			s.unique++
		} else {
			s.dup++
		}
	}
}

// lost returns how many of the sent messages were never echoed.
func (s *seqChecker) lost(sent uint64) uint64 {
	l := uint64(len(s.missing)) + s.gapLost
	if sent > s.next {
		l += sent - s.next
	}
	return l
}
