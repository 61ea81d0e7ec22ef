package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/PID/stat. It is 100 on every Linux
// architecture Go supports.
const clkTck = 100

// procCPU returns the summed user+system CPU time of pids from /proc/PID/stat.
func procCPU(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		s := string(b)
		// comm (field 2) may contain spaces; fields after the last ')' start at field 3.
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return 0, fmt.Errorf("pid %d: malformed stat", pid)
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			return 0, fmt.Errorf("pid %d: short stat", pid)
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
		st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
		total += time.Duration(ut+st) * time.Second / clkTck
	}
	return total, nil
}

// procRSS returns the summed VmRSS of pids in bytes.
func procRSS(pids []int) (int64, error) {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, err
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				f := strings.Fields(rest)
				if len(f) >= 1 {
					kb, err := strconv.ParseInt(f[0], 10, 64)
					if err != nil {
						return 0, err
					}
					total += kb * 1024
					found = true
				}
			}
		}
		if !found {
			return 0, fmt.Errorf("pid %d: no VmRSS", pid)
		}
	}
	return total, nil
}

// parsePids parses "123,456".
func parsePids(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad pid %q", p)
		}
		out = append(out, n)
	}
	return out, nil
}

// coreTimes returns, per CPU, the jiffies spent busy (all processes, interrupts included)
// and the jiffies the hypervisor ran something else while this guest wanted the CPU
// (steal), from /proc/stat.
func coreTimes() (busy, steal []int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, nil
	}
	return parseCoreTimes(string(b))
}

// parseCoreTimes reads the per-CPU lines of /proc/stat: user nice system idle iowait irq
// softirq steal. Busy is everything but idle, iowait and steal.
func parseCoreTimes(stat string) (busy, steal []int64) {
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var b, st int64
		for i := 1; i < len(f) && i <= 8; i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			switch i {
			case 4, 5: // idle, iowait
			case 8:
				st = v
			default:
				b += v
			}
		}
		busy = append(busy, b)
		steal = append(steal, st)
	}
	return busy, steal
}

// cpuMeter measures own and target CPU over an interval.
type cpuMeter struct {
	pids        []int
	wall0       time.Time
	self0, tgt0 time.Duration
	tgtErr      error
	cores0      []int64
	steal0      []int64
	coresBusy   []float64 // set by stop: each CPU's busy share (all processes), 0..1
	coresSteal  []float64 // set by stop: each CPU's share taken by the hypervisor, 0..1
}

func startCPU(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids, wall0: time.Now(), self0: selfCPU()}
	m.cores0, m.steal0 = coreTimes()
	if len(pids) > 0 {
		m.tgt0, m.tgtErr = procCPU(pids)
	}
	return m
}

// stop returns own and target CPU use in cores (1.0 = one core busy); target is -1 when
// unknown.
func (m *cpuMeter) stop() (self, target float64) {
	wall := time.Since(m.wall0).Seconds()
	self = (selfCPU() - m.self0).Seconds() / wall
	if c1, s1 := coreTimes(); len(c1) == len(m.cores0) && len(s1) == len(m.steal0) {
		for i := range c1 {
			m.coresBusy = append(m.coresBusy, float64(c1[i]-m.cores0[i])/clkTck/wall)
			m.coresSteal = append(m.coresSteal, float64(s1[i]-m.steal0[i])/clkTck/wall)
		}
	}
	target = -1
	if len(m.pids) > 0 && m.tgtErr == nil {
		if t1, err := procCPU(m.pids); err == nil {
			target = (t1 - m.tgt0).Seconds() / wall
		}
	}
	return self, target
}
