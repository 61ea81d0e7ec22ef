package main

import (
	"slices"
	"testing"
)

// TestParseCoreTimes: busy is every column but idle, iowait and steal; steal is its own
// figure; the all-CPU summary line and the rest of /proc/stat are skipped.
func TestParseCoreTimes(t *testing.T) {
	stat := `cpu  2396394 783 1910918 4251264 11768 0 860610 115947 0 0
cpu0 100 1 200 5000 7 3 40 52 0 0
cpu1 1000 0 300 9000 9 0 60 0 0 0
intr 123 4 5
ctxt 987654
`
	busy, steal := parseCoreTimes(stat)
	if want := []int64{100 + 1 + 200 + 3 + 40, 1000 + 300 + 60}; !slices.Equal(busy, want) {
		t.Errorf("busy %v, want %v", busy, want)
	}
	if want := []int64{52, 0}; !slices.Equal(steal, want) {
		t.Errorf("steal %v, want %v", steal, want)
	}
}
