//go:build !unix

package main

import "time"

// selfCPU is not measured on this system: the generator's CPU is reported as 0.
func selfCPU() time.Duration { return 0 }
