// Command report turns the JSON lines written by bench/compare.sh (one wsload -json object per
// run, labelled "ROW TARGET") into a markdown table: every figure of every target, with its
// ratio to the reference target (nginx by default) from the same run.
//
//	go run ./bench/report -ref nginx -targets "direct direct-gen wsgate nginx haproxy caddy" < results.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

type run struct {
	Label      string    `json:"label"`
	Skipped    string    `json:"skipped"` // set by compare.sh when a target could not run
	MsgsPerSec float64   `json:"msgs_per_s"`
	MBPerSec   float64   `json:"mb_per_s"`
	P50        float64   `json:"p50_us"`
	P99        float64   `json:"p99_us"`
	P999       float64   `json:"p999_us"`
	Behind     float64   `json:"behind_schedule"`
	Warmup     float64   `json:"warmup_s"`
	WarmupP99  float64   `json:"warmup_p99_us"`
	Sent       float64   `json:"sent"`
	HSPerSec   float64   `json:"handshakes_per_s"`
	BytesPer   float64   `json:"bytes_per_conn"`
	Open       float64   `json:"open"`
	Conns      float64   `json:"conns"`
	AliveOK    float64   `json:"alive_ok"`
	AliveChk   float64   `json:"alive_checked"`
	Errors     float64   `json:"errors"`
	GenCPU     float64   `json:"gen_cpu"`
	TargetCPU  float64   `json:"target_cpu"`
	FirstError string    `json:"first_error"`
	CoresBusy  []float64 `json:"cores_busy"`
	CoresSteal []float64 `json:"cores_steal"`
}

var proxyCPU = 0

func perCore(f func(*run) float64) func(*run) float64 {
	return func(r *run) float64 {
		if r.TargetCPU <= 0.01 {
			return -1
		}
		return f(r) / r.TargetCPU
	}
}

// otherLoad is the busy share of the proxy's core not explained by the target itself: other
// processes on the machine disturbing the measurement.
func otherLoad(r *run) float64 {
	if proxyCPU >= len(r.CoresBusy) || r.TargetCPU < 0 {
		return -1
	}
	o := r.CoresBusy[proxyCPU] - r.TargetCPU
	if o < 0 {
		o = 0
	}
	return o
}

// hostSteal is the CPU time the hypervisor took from this machine's cores during the run,
// in cores summed over all of them: time the target, the generator and the backend lost
// while wanting to run. -1 for results without it (older wsload).
func hostSteal(r *run) float64 {
	if len(r.CoresSteal) == 0 {
		return -1
	}
	var s float64
	for _, v := range r.CoresSteal {
		s += v
	}
	return s
}

// hasMetric reports whether ms shows m.
func hasMetric(ms []metric, m metric) bool {
	for _, x := range ms {
		if x.name == m.name {
			return true
		}
	}
	return false
}

// A round is disturbed when the host or other processes took at least this share of a core.
const (
	stealDisturbs = 0.05
	otherDisturbs = 0.10
)

// disturbed says what disturbed round r (host steal, other load on the proxy's core), or ""
// when neither reached its threshold: the round's figures say more about the machine than
// about the target.
func disturbed(r *run) string {
	var why []string
	if s := hostSteal(r); s >= stealDisturbs {
		why = append(why, fmt.Sprintf("host steal %.2f cores", s))
	}
	if o := otherLoad(r); o >= otherDisturbs {
		why = append(why, fmt.Sprintf("other load %.2f on the proxy core", o))
	}
	return strings.Join(why, ", ")
}

// machinePer returns the busy time of every CPU of the machine (all processes: the target,
// the generator, the backend, anything else) per unit of f, in µs. A target that uses less of
// its own core while this stays the same has moved work to the generator's core, not saved
// it (bench/README.md, "Client frames spliced with the client's key").
func machinePer(f func(*run) float64) func(*run) float64 {
	return func(r *run) float64 {
		n := f(r)
		if len(r.CoresBusy) == 0 || n <= 0 {
			return -1
		}
		var busy float64
		for _, b := range r.CoresBusy {
			busy += b
		}
		return busy * 1e6 / n
	}
}

type metric struct {
	name string
	get  func(r *run) float64
	na   bool // an unknown value (-1: not measured in that run) shows as n/a
}

var (
	mMsgs   = metric{"msgs/s", func(r *run) float64 { return r.MsgsPerSec }, false}
	mMB     = metric{"MB/s each way", func(r *run) float64 { return r.MBPerSec }, false}
	mP50    = metric{"p50 µs", func(r *run) float64 { return r.P50 }, false}
	mP99    = metric{"p99 µs", func(r *run) float64 { return r.P99 }, false}
	mP999   = metric{"p99.9 µs", func(r *run) float64 { return r.P999 }, false}
	mHS     = metric{"handshakes/s", func(r *run) float64 { return r.HSPerSec }, false}
	mBytes  = metric{"bytes/conn (RSS)", func(r *run) float64 { return r.BytesPer }, false}
	mOpen   = metric{"conns open", func(r *run) float64 { return r.Open }, false}
	mConns  = metric{"conns", func(r *run) float64 { return r.Conns }, false}
	mAlive  = metric{"sample alive", func(r *run) float64 { return r.AliveOK }, false}
	mBehind = metric{"sends behind", func(r *run) float64 { return r.Behind }, false}
	// The warm-up's p99 (wsload -warmup): the first messages of new connections, which the
	// other latency figures leave out.
	mWarm = metric{"p99 µs, warm-up", func(r *run) float64 {
		if r.Warmup <= 0 {
			return -1
		}
		return r.WarmupP99
	}, true}
	mTCPU  = metric{"target CPU (cores)", func(r *run) float64 { return r.TargetCPU }, true}
	mGCPU  = metric{"generator CPU (cores)", func(r *run) float64 { return r.GenCPU }, false}
	mErr   = metric{"errors", func(r *run) float64 { return r.Errors }, false}
	mOther = metric{"other load on proxy core", otherLoad, true}
	mSteal = metric{"host steal (cores)", hostSteal, true}
	// Per target core: the figure divided by the CPU the target used, which stays meaningful
	// when other processes take part of the target's core.
	mMsgsPC = metric{"msgs/s per target core", perCore(func(r *run) float64 { return r.MsgsPerSec }), true}
	mMBPC   = metric{"MB/s per target core", perCore(func(r *run) float64 { return r.MBPerSec }), true}
	mHSPC   = metric{"handshakes/s per target core", perCore(func(r *run) float64 { return r.HSPerSec }), true}
	mMachM  = metric{"machine CPU µs per message", machinePer(func(r *run) float64 { return r.MsgsPerSec }), true}
	mMachHS = metric{"machine CPU µs per handshake", machinePer(func(r *run) float64 { return r.HSPerSec }), true}
)

// rows in display order, with their titles and metrics; ids match compare.sh.
var rows = []struct {
	id, title string
	metrics   []metric
}{
	{"tp64", "throughput 64 B × 100 conns × window 8", []metric{mMsgs, mMsgsPC, mP50, mP99, mP999, mTCPU, mGCPU, mMachM, mOther, mSteal, mErr}},
	{"tp64k", "throughput 64 KiB × 10 conns × window 4", []metric{mMB, mMBPC, mMsgs, mP50, mP99, mP999, mTCPU, mGCPU, mMachM, mOther, mSteal, mErr}},
	{"rate", "rate 20,000 msg/s × 128 B over 1,000 conns", []metric{mP50, mP99, mP999, mWarm, mBehind, mTCPU, mGCPU, mOther, mSteal, mErr}},
	{"ratemany", "rate 1 msg/s per conn × 128 B over many conns", []metric{mConns, mP50, mP99, mP999, mWarm, mBehind, mTCPU, mGCPU, mOther, mSteal, mErr}},
	{"idle", "idle ws://", []metric{mBytes, mOpen, mAlive, mErr}},
	{"idlewss", "idle wss://", []metric{mBytes, mOpen, mAlive, mErr}},
	{"hswss", "wss handshakes × 32 workers", []metric{mHS, mHSPC, mP50, mP99, mP999, mTCPU, mGCPU, mMachHS, mOther, mSteal, mErr}},
	{"tpwss", "wss throughput 64 B × 100 conns × window 8", []metric{mMsgs, mMsgsPC, mP50, mP99, mP999, mTCPU, mGCPU, mMachM, mOther, mSteal, mErr}},
	{"tpwssrec", "wss throughput 64 B × 100 conns × window 8, a TLS record per message", []metric{mMsgs, mMsgsPC, mP50, mP99, mP999, mTCPU, mGCPU, mMachM, mOther, mSteal, mErr}},
	{"ratewss", "wss rate 20,000 msg/s × 128 B over 1,000 conns", []metric{mP50, mP99, mP999, mWarm, mBehind, mTCPU, mGCPU, mOther, mSteal, mErr}},
}

func main() {
	ref := flag.String("ref", "nginx", "reference target for ratios")
	targetsFlag := flag.String("targets", "direct direct-gen wsgate nginx haproxy caddy", "targets (columns), in order")
	flag.IntVar(&proxyCPU, "proxy-cpu", 0, "CPU the targets were pinned to (for the other-load row)")
	flag.Parse()
	render(os.Stdout, os.Stdin, strings.Fields(*targetsFlag), *ref)
}

// render reads the JSON lines of a run from in and writes the table to out. A cell that ran
// in several rounds (several lines with the same label) shows the median of its rounds
// (errors: their sum), ratios are medians to the reference's median, and the row's first
// figure gets a second line with its range over the rounds: the run's own noise.
func render(out io.Writer, in io.Reader, targets []string, ref string) {
	res := map[string][]*run{} // "row target" -> its rounds
	rounds := 1
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		r := &run{TargetCPU: -1}
		if err := json.Unmarshal([]byte(line), r); err != nil {
			fmt.Fprintln(os.Stderr, "report: skipping bad line:", err)
			continue
		}
		res[r.Label] = append(res[r.Label], r)
		rounds = max(rounds, len(res[r.Label]))
	}

	fmt.Fprintf(out, "| scenario | metric | %s |\n", strings.Join(targets, " | "))
	fmt.Fprintf(out, "|---|---|%s\n", strings.Repeat("---:|", len(targets)))
	var notes []string
	for _, row := range rows {
		present, n := false, 0
		for _, t := range targets {
			if rs := res[row.id+" "+t]; rs != nil {
				present = true
				n = max(n, len(ran(rs)))
			}
		}
		if !present {
			continue
		}
		for i, m := range row.metrics {
			title := ""
			if i == 0 {
				title = row.title
			}
			cells := make([]string, len(targets))
			refRuns := ran(res[row.id+" "+ref])
			for j, t := range targets {
				all := res[row.id+" "+t]
				switch rs := ran(all); {
				case all == nil:
					cells[j] = "–"
				case len(rs) == 0:
					cells[j] = "n/a"
				default:
					cells[j] = cell(m, rs, refRuns, t == ref)
				}
			}
			fmt.Fprintf(out, "| %s | %s | %s |\n", title, m.name, strings.Join(cells, " | "))
			if i == 0 && n > 1 {
				for j, t := range targets {
					if rs := ran(res[row.id+" "+t]); len(rs) > 0 {
						lo, hi := spread(m, rs)
						cells[j] = format(lo) + "–" + format(hi)
					}
				}
				fmt.Fprintf(out, "|  | %s, range over %d rounds | %s |\n", m.name, n, strings.Join(cells, " | "))
			}
		}
		for _, t := range targets {
			for k, r := range res[row.id+" "+t] {
				if r.Skipped != "" {
					notes = append(notes, fmt.Sprintf("%s / %s: not run (%s)", row.id, t, r.Skipped))
					continue
				}
				if r.FirstError != "" {
					notes = append(notes, fmt.Sprintf("%s / %s: %s", row.id, t, r.FirstError))
				}
				if d := disturbed(r); d != "" && hasMetric(row.metrics, mSteal) {
					notes = append(notes, fmt.Sprintf("%s / %s, round %d: disturbed (%s)", row.id, t, k+1, d))
				}
			}
		}
	}
	if rounds > 1 {
		fmt.Fprintf(out, "\nEach figure is the median of the rounds a target ran (errors: their sum); ratios in parentheses are that median ÷ %s's, from the same run (higher is better for rates, worse for latency, CPU and memory).\n", ref)
	} else {
		fmt.Fprintf(out, "\nRatios in parentheses are value ÷ %s's value in the same run (higher is better for rates, worse for latency, CPU and memory).\n", ref)
	}
	if len(notes) > 0 {
		fmt.Fprintln(out, "\nNotes:")
		for _, n := range notes {
			fmt.Fprintln(out, "- "+n)
		}
	}
}

// ran returns the rounds of rs that ran (were not skipped).
func ran(rs []*run) []*run {
	var out []*run
	for _, r := range rs {
		if r.Skipped == "" {
			out = append(out, r)
		}
	}
	return out
}

// value aggregates m over rounds: the sum of errors, the median of anything else (of the
// rounds where it is known: -1 means unknown, and is the result when no round knows it).
func value(m metric, rs []*run) float64 {
	var vs []float64
	sum := 0.0
	for _, r := range rs {
		if v := m.get(r); v >= 0 {
			vs = append(vs, v)
			sum += v
		}
	}
	switch {
	case len(vs) == 0:
		return -1
	case m.name == mErr.name:
		return sum
	}
	sort.Float64s(vs)
	k := len(vs)
	if k%2 == 1 {
		return vs[k/2]
	}
	return (vs[k/2-1] + vs[k/2]) / 2
}

// spread is the lowest and highest value of m over rounds.
func spread(m metric, rs []*run) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, r := range rs {
		v := m.get(r)
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi
}

func cell(m metric, rs, ref []*run, isRef bool) string {
	v := value(m, rs)
	if v < 0 && m.na {
		return "n/a"
	}
	s := format(v)
	if m.name == mOther.name || m.name == mSteal.name || m.name == mErr.name {
		return s // no ratio: not a property of the target
	}
	if len(ref) > 0 && !isRef {
		rv := value(m, ref)
		if rv > 0 && v >= 0 {
			s += fmt.Sprintf(" (%.2f×)", v/rv)
		}
	}
	return s
}

func format(v float64) string {
	switch {
	case math.Abs(v) >= 1000:
		return commas(int64(math.Round(v)))
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
