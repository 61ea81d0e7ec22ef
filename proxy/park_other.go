//go:build !linux

package proxy

// Without epoll, an idle pump waits in the runtime's poller (one goroutine per idle side).
type parkingLot struct{}

var lot parkingLot

const parkingSupported = false

func (*parkingLot) park(*side) bool { return false }
func (*parkingLot) forget(*side)    {}

func (*parkingLot) addHot(*side)  {}
func (*parkingLot) dropHot(*side) {}

// Parked reports how many connection sides are parked now: always 0 on this system.
func Parked() int { return 0 }

func (*parkingLot) woken() {}

func lockLot()   {}
func unlockLot() {}
