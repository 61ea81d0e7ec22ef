// Command wsload is a WebSocket load generator for benchmarking wsgate and other proxies on
// loopback. It speaks the protocol with a small codec of its own on raw TCP (or TLS), so its
// own cost per message is a few syscalls and no allocation.
//
// Modes: throughput, rate, idle, handshake. See bench/README.md.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"
)

type options struct {
	mode       string
	url        string
	conns      int
	window     int
	size       int
	duration   time.Duration
	rate       float64
	n          int
	pids       []int
	insecure   bool
	caFile     string
	serverName string
	jsonOut    bool
	settle     time.Duration
	sample     int
	perIP      int
	srcBase    string
	lagLimit   time.Duration
	warmup     time.Duration
	drain      time.Duration
	timeout    time.Duration
	dialPar    int
	label      string
	split      bool
}

func (o *options) dialConfig() (*dialConfig, error) {
	u, err := url.Parse(o.url)
	if err != nil {
		return nil, fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return nil, fmt.Errorf("-url: scheme must be ws or wss, not %q", u.Scheme)
	}
	if err := checkLoopback(u); err != nil {
		return nil, err
	}
	dc := &dialConfig{URL: u, Timeout: o.timeout}
	if u.Scheme == "wss" {
		tc := &tls.Config{
			ServerName:         o.serverName,
			InsecureSkipVerify: o.insecure,
			NextProtos:         []string{"http/1.1"},
		}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		if o.caFile != "" {
			pem, err := os.ReadFile(o.caFile)
			if err != nil {
				return nil, fmt.Errorf("-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("-ca: no certificate in %s", o.caFile)
			}
			tc.RootCAs = pool
		}
		dc.TLS = tc
	}
	if o.perIP > 0 && o.srcBase != "" {
		ip := net.ParseIP(o.srcBase).To4()
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("-src %q: must be an IPv4 loopback address", o.srcBase)
		}
		if th := net.ParseIP(u.Hostname()); th != nil && th.To4() == nil {
			return dc, nil // IPv6 target: no IPv4 source spreading
		}
		total := o.n
		if o.mode != "idle" {
			total = o.conns
		}
		count := (total + o.perIP - 1) / o.perIP
		for i := 0; i < count; i++ {
			a := ip.To4()
			v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
			v += uint32(i)
			next := net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
			if !next.IsLoopback() {
				return nil, errors.New("too many connections for the source address range")
			}
			dc.LocalAddrs = append(dc.LocalAddrs, next)
		}
	}
	return dc, nil
}

// result is one run's outcome; with -json it is printed as one JSON object line.
type result struct {
	Label    string  `json:"label,omitempty"`
	Mode     string  `json:"mode"`
	URL      string  `json:"url"`
	Conns    int     `json:"conns"`
	Window   int     `json:"window,omitempty"`
	Split    bool    `json:"split,omitempty"`
	Size     int     `json:"size,omitempty"`
	Rate     float64 `json:"rate,omitempty"`
	Duration float64 `json:"duration_s"`

	Sent         uint64  `json:"sent,omitempty"`
	Msgs         uint64  `json:"msgs"`
	MsgsPerSec   float64 `json:"msgs_per_s,omitempty"`
	MBPerSec     float64 `json:"mb_per_s,omitempty"`
	AchievedRate float64 `json:"achieved_rate,omitempty"`

	P50  float64 `json:"p50_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p999_us"`
	Max  float64 `json:"max_us"`
	Mean float64 `json:"mean_us"`

	// Warm-up (throughput, rate): messages sent during it are echoed and checked like all
	// others, but their round trips are kept apart and the run's figures exclude them.
	Warmup     float64 `json:"warmup_s,omitempty"`
	WarmupMsgs uint64  `json:"warmup_msgs,omitempty"`
	WarmupP99  float64 `json:"warmup_p99_us,omitempty"`
	WarmupMax  float64 `json:"warmup_max_us,omitempty"`

	Behind uint64  `json:"behind_schedule,omitempty"`
	LagP99 float64 `json:"send_lag_p99_us,omitempty"`
	LagMax float64 `json:"send_lag_max_us,omitempty"`

	Handshakes       uint64  `json:"handshakes,omitempty"`
	HandshakesPerSec float64 `json:"handshakes_per_s,omitempty"`

	Open           uint64  `json:"open,omitempty"`
	ConnectSeconds float64 `json:"connect_s,omitempty"`
	RSSBefore      int64   `json:"rss_before,omitempty"`
	RSSAfter       int64   `json:"rss_after,omitempty"`
	BytesPerConn   float64 `json:"bytes_per_conn,omitempty"`
	AliveChecked   uint64  `json:"alive_checked,omitempty"`
	AliveOK        uint64  `json:"alive_ok,omitempty"`

	Lost       uint64 `json:"lost"`
	Dup        uint64 `json:"duplicated"`
	Reordered  uint64 `json:"reordered"`
	Corrupt    uint64 `json:"corrupt"`
	ConnErrors uint64 `json:"conn_errors"`
	Errors     uint64 `json:"errors"`
	FirstError string `json:"first_error,omitempty"`

	GenCPU    float64 `json:"gen_cpu"`    // generator CPU, cores (user+sys / wall)
	TargetCPU float64 `json:"target_cpu"` // target CPU, cores; -1 without -pid
	// CoresBusy is each CPU's busy share over the run, all processes (from /proc/stat): what
	// is left after the target and the generator is other load disturbing the measurement.
	CoresBusy []float64 `json:"cores_busy,omitempty"`
	// CoresSteal is each CPU's share of the run taken by the hypervisor for something else
	// while this guest had work for it (steal; not in CoresBusy): time a virtual machine's
	// programs lost without using it.
	CoresSteal []float64 `json:"cores_steal,omitempty"`
}

func us(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }

func (r *result) setLatency(h *hist) {
	r.P50 = us(h.quantile(0.50))
	r.P99 = us(h.quantile(0.99))
	r.P999 = us(h.quantile(0.999))
	r.Max = us(h.max)
	r.Mean = us(int64(h.mean()))
}

func (r *result) print(w *os.File) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("wsload %s %s  conns=%d duration=%.1fs", r.Mode, r.URL, r.Conns, r.Duration)
	if r.Split {
		p("  one TLS record per message (-split)")
	}
	switch r.Mode {
	case "throughput", "rate":
		if r.Mode == "rate" {
			p("  target rate %.0f msg/s, achieved send rate %.0f msg/s; %d sends behind schedule (send lag p99 %.0fµs, max %.0fµs)",
				r.Rate, r.AchievedRate, r.Behind, r.LagP99, r.LagMax)
		} else {
			p("  size %d B, window %d", r.Size, r.Window)
		}
		p("  %.0f msgs/s echoed  %.2f MB/s each way  (%d sent, %d echoed in time)", r.MsgsPerSec, r.MBPerSec, r.Sent, r.Msgs)
	case "handshake":
		p("  %.0f handshakes/s (%d in total)", r.HandshakesPerSec, r.Handshakes)
	case "idle":
		p("  %d/%d connections open in %.1fs", r.Open, r.Conns, r.ConnectSeconds)
		if r.RSSAfter > 0 {
			p("  target RSS %.1f MiB -> %.1f MiB: %.0f bytes per connection",
				float64(r.RSSBefore)/(1<<20), float64(r.RSSAfter)/(1<<20), r.BytesPerConn)
		} else {
			p("  (no -pid: target RSS not measured)")
		}
		p("  liveness: %d/%d sampled connections echoed", r.AliveOK, r.AliveChecked)
	}
	p("  latency µs: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f", r.P50, r.P99, r.P999, r.Max, r.Mean)
	if r.Warmup > 0 {
		p("  warm-up %.1fs before that (not in the figures above): %d round trips, p99 %.1f µs, max %.1f µs",
			r.Warmup, r.WarmupMsgs, r.WarmupP99, r.WarmupMax)
	}
	p("  errors: %d (lost %d, duplicated %d, reordered %d, corrupt %d, connection %d)",
		r.Errors, r.Lost, r.Dup, r.Reordered, r.Corrupt, r.ConnErrors)
	if r.FirstError != "" {
		p("  first error: %s", r.FirstError)
	}
	tgt := "n/a (no -pid)"
	if r.TargetCPU >= 0 {
		tgt = fmt.Sprintf("%.2f cores", r.TargetCPU)
	}
	p("  CPU: generator %.2f cores, target %s; machine busy:%s; host steal:%s", r.GenCPU, tgt, perCPU(r.CoresBusy), perCPU(r.CoresSteal))
}

// perCPU formats shares of each CPU as " cpu0 83% cpu1 97%".
func perCPU(shares []float64) string {
	s := ""
	for i, v := range shares {
		s += fmt.Sprintf(" cpu%d %.0f%%", i, v*100)
	}
	return s
}

func main() {
	o := &options{}
	var pids string
	flag.StringVar(&o.mode, "mode", "throughput", "throughput | rate | idle | handshake")
	flag.StringVar(&o.url, "url", "ws://127.0.0.1:8001/", "target ws:// or wss:// URL (loopback only)")
	flag.IntVar(&o.conns, "c", 10, "connections (throughput, rate) or workers (handshake)")
	flag.IntVar(&o.window, "window", 1, "throughput: messages in flight per connection")
	flag.IntVar(&o.size, "size", 64, "message size in bytes (>= 16: sequence number + timestamp)")
	flag.DurationVar(&o.duration, "d", 10*time.Second, "run duration (throughput, rate, handshake)")
	flag.Float64Var(&o.rate, "rate", 1000, "rate: total messages per second over all connections")
	flag.IntVar(&o.n, "n", 1000, "idle: connections to hold")
	flag.StringVar(&pids, "pid", "", "target process id(s), comma-separated, for CPU and RSS")
	flag.BoolVar(&o.insecure, "insecure", false, "wss: skip certificate verification")
	flag.StringVar(&o.caFile, "ca", "", "wss: PEM file of CA certificates to trust")
	flag.StringVar(&o.serverName, "servername", "", "wss: TLS server name (default: URL host)")
	flag.BoolVar(&o.jsonOut, "json", false, "print one JSON object line instead of the summary")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "idle: wait after the last connect before reading RSS")
	flag.IntVar(&o.sample, "sample", 100, "idle: connections to check with an echo afterwards")
	flag.IntVar(&o.perIP, "per-ip", 20000, "connections per source address (0 = let the kernel choose)")
	flag.StringVar(&o.srcBase, "src", "127.0.0.2", "first source address; later ones count up from it")
	flag.DurationVar(&o.lagLimit, "lag", time.Millisecond, "rate: a send later than this past its schedule counts as behind")
	flag.DurationVar(&o.warmup, "warmup", 0, "throughput, rate: send for this long before the measured -d, keeping its round trips out of the figures (reported apart)")
	flag.DurationVar(&o.drain, "drain", 3*time.Second, "how long to wait for in-flight echoes after the run")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "connect + handshake timeout")
	flag.IntVar(&o.dialPar, "dial-par", 64, "concurrent dials while opening connections")
	flag.BoolVar(&o.split, "split", false, "throughput, rate over wss: write each message on its own, one TLS record per message as browsers send them (default: a batch's messages in one write)")
	flag.StringVar(&o.label, "label", "", "free text copied into the JSON output")
	cpuProfile := flag.String("cpuprofile", "", "write the generator's CPU profile to this file")
	traceFile := flag.String("trace", "", "write the generator's execution trace (go tool trace) to this file")
	flag.Parse()
	var err error
	record(*traceFile, trace.Start)
	defer trace.Stop()
	record(*cpuProfile, pprof.StartCPUProfile)
	defer pprof.StopCPUProfile()
	if o.pids, err = parsePids(pids); err != nil {
		fatal(err)
	}
	var res *result
	switch strings.ToLower(o.mode) {
	case "throughput", "rate":
		res, err = runLoad(o)
	case "idle":
		res, err = runIdle(o)
	case "handshake":
		o.perIP = 0
		res, err = runHandshake(o)
	default:
		err = fmt.Errorf("unknown -mode %q", o.mode)
	}
	if res != nil {
		res.Label = o.label
		if o.jsonOut {
			b, _ := json.Marshal(res)
			fmt.Println(string(b))
		} else {
			res.print(os.Stdout)
		}
	}
	if err != nil {
		pprof.StopCPUProfile()
		trace.Stop()
		fatal(err)
	}
}

// record starts writing a profile or trace (start) to the file at path, if path is set. The
// caller stops it; stopping one that never started does nothing.
func record(path string, start func(io.Writer) error) {
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		fatal(err)
	}
	if err := start(f); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "wsload:", err)
	os.Exit(1)
}
