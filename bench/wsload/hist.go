package main

import (
	"math/bits"
	"time"
)

// hist is an HDR-style log-linear histogram of durations in nanoseconds: values below 256 ns
// are exact, above that every power-of-two range is split into 128 linear sub-buckets, so a
// recorded value is reported within 1/128 (< 0.8 %) of its true value. Recording is a few
// integer operations and no allocation; values past ~2^40 ns (18 min) land in the last bucket.
const (
	histSubBits  = 7
	histSub      = 1 << histSubBits // 128 sub-buckets per power of two
	histMaxShift = 33               // largest tracked: (2*histSub)<<histMaxShift ns ≈ 2^41 ns
	histBuckets  = 2*histSub + histMaxShift*histSub
)

type hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
	sum    float64
}

func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 2*histSub {
		return int(u)
	}
	shift := bits.Len64(u) - (histSubBits + 1)
	if shift > histMaxShift {
		return histBuckets - 1
	}
	return 2*histSub + (shift-1)*histSub + int(u>>uint(shift)) - histSub
}

// histValue returns the middle of bucket i.
func histValue(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	j := i - 2*histSub
	shift := j/histSub + 1
	m := int64(j%histSub + histSub)
	return m<<uint(shift) + (int64(1)<<uint(shift))/2
}

func (h *hist) record(d time.Duration) {
	v := int64(d)
	h.counts[histIndex(v)]++
	h.n++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
}

// prefault touches every page of h's counts, so that the first values recorded during a run
// do not fault fresh memory in: a new connection's histograms come from memory the process has
// never used, and on a virtual machine the first touch of such a page can cost tens of
// microseconds. A thousand connections faulting in their histograms at once in the first
// milliseconds of a run stalled the generator for 100-200 ms, which showed as a latency tail of
// every target.
func (h *hist) prefault() {
	const perPage = 4096 / 8
	for i := 0; i < len(h.counts); i += perPage {
		h.counts[i] = 0
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the value at quantile q (0..1) in nanoseconds.
func (h *hist) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var acc uint64
	for i, c := range h.counts {
		acc += c
		if acc >= rank {
			v := histValue(i)
			if v > h.max {
				v = h.max
			}
			return v
		}
	}
	return h.max
}

func (h *hist) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}
