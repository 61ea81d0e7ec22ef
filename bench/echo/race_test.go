//go:build race

package main

// raceEnabled: the race detector makes sync.Pool drop items on purpose, so the pooled
// payload buffers are allocated again and allocation counts say nothing.
const raceEnabled = true
