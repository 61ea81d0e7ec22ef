//go:build !unix

package main

// minorFaults is not known here.
func minorFaults() int64 { return -1 }
