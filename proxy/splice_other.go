//go:build !linux

package proxy

import "github.com/wsgate/wsgate/wsframe"

// Without splice(2), every payload goes through the relay's buffers.
const (
	spliceSupported = false
	spliceMin       = 0
)

type splicer struct{}

func getSplicer() *splicer { return nil }

// spliceChunk is never called here (spliceSupported is false).
func (*Pair) spliceChunk(_, _ *side, _ *splicer, _ *[bufSize]byte, _ wsframe.Header) bool {
	return false
}
