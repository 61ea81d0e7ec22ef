package main

import (
	"strings"
	"testing"
)

// lines for one row in three rounds: wsgate 300k/500k/400k msgs/s, nginx 200k/400k/100k, one
// wsgate round with 2 errors; haproxy could not run.
const threeRounds = `
{"label":"tp64 wsgate","msgs_per_s":300000,"target_cpu":0.5,"errors":0}
{"label":"tp64 nginx","msgs_per_s":200000,"target_cpu":0.5,"errors":0}
{"label":"tp64 haproxy","skipped":"not installed"}
{"label":"tp64 nginx","msgs_per_s":400000,"target_cpu":0.8,"errors":0}
{"label":"tp64 wsgate","msgs_per_s":500000,"target_cpu":1.0,"errors":2,"first_error":"lost 2"}
{"label":"tp64 haproxy","skipped":"not installed"}
{"label":"tp64 wsgate","msgs_per_s":400000,"target_cpu":0.5,"errors":0}
{"label":"tp64 nginx","msgs_per_s":100000,"target_cpu":0.5,"errors":0}
`

func renderString(t *testing.T, in string, targets string) string {
	t.Helper()
	var b strings.Builder
	render(&b, strings.NewReader(in), strings.Fields(targets), "nginx")
	return b.String()
}

// row returns the table line whose metric column is metric.
func row(t *testing.T, table, metric string) string {
	t.Helper()
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Split(l, " | "); len(f) > 2 && f[1] == metric {
			return l
		}
	}
	t.Fatalf("no %q row in:\n%s", metric, table)
	return ""
}

func TestRenderRounds(t *testing.T) {
	out := renderString(t, threeRounds, "wsgate nginx haproxy")
	for metric, want := range map[string]string{
		// medians: wsgate 400k, nginx 200k
		"msgs/s": "| throughput 64 B × 100 conns × window 8 | msgs/s | 400,000 (2.00×) | 200,000 | n/a |",
		// each round's range, no ratio
		"msgs/s, range over 3 rounds": "|  | msgs/s, range over 3 rounds | 300,000–500,000 | 100,000–400,000 | n/a |",
		// per core: wsgate 600k/500k/800k -> 600k; nginx 400k/500k/200k -> 400k
		"msgs/s per target core": "|  | msgs/s per target core | 600,000 (1.50×) | 400,000 | n/a |",
		// errors add up over rounds
		"errors": "|  | errors | 2 | 0 | n/a |",
	} {
		if got := row(t, out, metric); got != want {
			t.Errorf("%s:\n got %s\nwant %s", metric, got, want)
		}
	}
	for _, want := range []string{"median of the rounds", "tp64 / wsgate: lost 2", "tp64 / haproxy: not run (not installed)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderOneRound(t *testing.T) {
	out := renderString(t, `{"label":"idle wsgate","bytes_per_conn":3500,"open":9900,"alive_ok":100,"errors":0}
{"label":"idle nginx","bytes_per_conn":18000,"open":9900,"alive_ok":100,"errors":0}`, "wsgate nginx")
	if got, want := row(t, out, "bytes/conn (RSS)"), "| idle ws:// | bytes/conn (RSS) | 3,500 (0.19×) | 18,000 |"; got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	if strings.Contains(out, "range over") || strings.Contains(out, "median") {
		t.Errorf("one round shows a range or medians:\n%s", out)
	}
}

// TestRenderWarmup: the rate row shows the warm-up's p99 apart, and n/a for a run without a
// warm-up (older results, or WARMUP=0).
func TestRenderWarmup(t *testing.T) {
	out := renderString(t, `{"label":"rate wsgate","p99_us":3000,"warmup_s":2,"warmup_p99_us":40000,"target_cpu":0.6,"errors":0}
{"label":"rate nginx","p99_us":2000,"warmup_s":2,"warmup_p99_us":20000,"target_cpu":0.5,"errors":0}
{"label":"rate haproxy","p99_us":2500,"target_cpu":0.5,"errors":0}`, "wsgate nginx haproxy")
	if got, want := row(t, out, "p99 µs"), "|  | p99 µs | 3,000 (1.50×) | 2,000 | 2,500 (1.25×) |"; got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	if got, want := row(t, out, "p99 µs, warm-up"), "|  | p99 µs, warm-up | 40,000 (2.00×) | 20,000 | n/a |"; got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}

// TestRenderMachineCPU: the throughput rows show the busy time of all CPUs per message, from
// cores_busy, and the hypervisor's steal summed over the cores, without a ratio (it is the
// machine's, not the target's); both are n/a for a run without them (older results).
func TestRenderMachineCPU(t *testing.T) {
	out := renderString(t, `{"label":"tp64 wsgate","msgs_per_s":250000,"target_cpu":0.5,"cores_busy":[0.5,1.0],"cores_steal":[0.25,0.05],"errors":0}
{"label":"tp64 nginx","msgs_per_s":300000,"target_cpu":0.6,"cores_busy":[0.62,0.98],"cores_steal":[0,0.01],"errors":0}
{"label":"tp64 haproxy","msgs_per_s":300000,"target_cpu":0.6,"errors":0}`, "wsgate nginx haproxy")
	for _, want := range []string{
		"|  | machine CPU µs per message | 6 (1.12×) | 5.33 | n/a |",
		"|  | host steal (cores) | 0.30 | 0.01 | n/a |",
	} {
		name := strings.Split(want, " | ")[1]
		if got := row(t, out, name); got != want {
			t.Errorf("got %s\nwant %s", got, want)
		}
	}
}

// TestRenderDisturbedRounds: a round with host steal or other load on the proxy's core over
// the thresholds gets a note naming the row, the target and the round, even when the median
// hides it; quiet rounds and the idle rows (which measure memory) get none.
func TestRenderDisturbedRounds(t *testing.T) {
	out := renderString(t, `{"label":"tp64 wsgate","msgs_per_s":250000,"target_cpu":0.5,"cores_busy":[0.5,1.0],"cores_steal":[0,0.01],"errors":0}
{"label":"tp64 wsgate","msgs_per_s":150000,"target_cpu":0.5,"cores_busy":[0.7,1.0],"cores_steal":[0.04,0.03],"errors":0}
{"label":"tp64 nginx","msgs_per_s":300000,"target_cpu":0.6,"cores_busy":[0.62,0.98],"cores_steal":[0,0.01],"errors":0}
{"label":"idle wsgate","bytes_per_conn":3500,"target_cpu":0.01,"cores_busy":[0.5,0.5],"cores_steal":[0.3,0.3],"errors":0}`, "wsgate nginx")
	want := "- tp64 / wsgate, round 2: disturbed (host steal 0.07 cores, other load 0.20 on the proxy core)"
	if !strings.Contains(out, want) {
		t.Errorf("no note %q in\n%s", want, out)
	}
	if n := strings.Count(out, "disturbed"); n != 1 {
		t.Errorf("%d disturbed notes, want 1:\n%s", n, out)
	}
}
