// Command local measures the local runner against plain bash, in one run on
// this machine, and prints each figure with its ratio to the baseline:
//
//	go run ./bench/local [-n 20]
//
// Cases (from the issue): one step; 20 sequential steps; one step then 20
// in parallel; a step printing 200,000 lines with masking on. Baselines:
// bash running the same step scripts (each in its own `bash -e`, as oxide
// does) and `bash -c 'seq 1 200000' | sed 's/^/x:/'` for the lines. And
// the CLI's start-up: `oxide --version` against an empty Go program built
// the same way, run alternately.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 20, "repetitions of each command (the median is reported)")
	starts := flag.Int("starts", 200, "runs of oxide --version and of the empty program")
	flag.Parse()
	dir, err := os.MkdirTemp("", "oxide-bench-")
	check(err)
	defer os.RemoveAll(dir)

	oxide := filepath.Join(dir, "oxide")
	build := exec.Command("go", "build", "-o", oxide, "./cmd/oxide")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	check(build.Run())
	empty := filepath.Join(dir, "empty")
	check(os.WriteFile(empty+".go", []byte("package main\n\nfunc main() {}\n"), 0o644))
	build = exec.Command("go", "build", "-o", empty, empty+".go")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	check(build.Run())

	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		check(os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	steps := func(count int, parallel bool) string {
		var b strings.Builder
		fmt.Fprintf(&b, "version: \"1\"\nname: bench\nstages:\n  - name: s\n    steps:\n")
		for i := range count {
			fmt.Fprintf(&b, "      - name: step%d\n        run: \"true\"\n", i)
		}
		if parallel {
			b.WriteString("  - name: p\n    parallel: true\n    steps:\n")
			for i := range count {
				fmt.Fprintf(&b, "      - name: par%d\n        run: \"true\"\n", i)
			}
		}
		return b.String()
	}
	one := write("one.yaml", steps(1, false))
	twenty := write("twenty.yaml", steps(20, false))
	fan := write("fan.yaml", steps(1, false)+"  - name: p\n    depends_on: [s]\n    parallel: true\n    steps:\n"+parSteps(20))
	lines := write("lines.yaml", "version: \"1\"\nname: lines\nstages:\n  - name: s\n    steps:\n      - name: seq\n        run: seq 1 200000\n")
	step := write("step.sh", "true\n")

	oxStart, emptyStart := startup(*starts, oxide, empty)

	run := func(name string, args ...string) result {
		return measure(*n, dir, name, args...)
	}
	env := []string{"--secret", "TOKEN=not-in-the-output", "--output", "text"}

	bash1 := run("bash: 1 step", "bash", "-c", "bash -e "+step)
	bash20 := run("bash: 20 steps", "bash", "-c", strings.Repeat("bash -e "+step+"; ", 20))
	bashFan := run("bash: 1 then 20 parallel", "bash", "-c", "bash -e "+step+"; "+strings.Repeat("bash -e "+step+" & ", 20)+"wait")
	bashLines := run("bash: seq 200000 | sed", "bash", "-c", "seq 1 200000 | sed 's/^/x:/'")

	ox1 := run("oxide: 1 step", append([]string{oxide, "run", one}, env...)...)
	ox20 := run("oxide: 20 steps", append([]string{oxide, "run", twenty}, env...)...)
	oxFan := run("oxide: 1 then 20 parallel", append([]string{oxide, "run", fan}, env...)...)
	oxLines := run("oxide: 200,000 lines, masked", append([]string{oxide, "run", lines}, env...)...)

	fmt.Println()
	fmt.Printf("%-34s %10s %10s %8s %10s\n", "case", "oxide", "bash", "ratio", "peak RSS")
	for _, c := range [][2]result{{ox1, bash1}, {ox20, bash20}, {oxFan, bashFan}, {oxLines, bashLines}} {
		fmt.Printf("%-34s %10s %10s %7.2fx %7.1f MiB\n", c[0].name, ms(c[0].median), ms(c[1].median), float64(c[0].median)/float64(c[1].median), float64(c[0].maxRSS)/1024)
	}
	fixed := ox1.median - bash1.median
	perStep := ((ox20.median - ox1.median) - (bash20.median - bash1.median)) / 19
	fmt.Println()
	fmt.Printf("fixed overhead over bash:      %s   (target <= 10ms; woodpecker-cli exec ~27ms)\n", ms(fixed))
	fmt.Printf("orchestration per step:        %s   (target <= 0.3ms; woodpecker ~0.7ms)\n", ms(perStep))
	fmt.Printf("200,000 lines vs bash|sed:     %.2fx  (target <= 1.5x)\n", float64(oxLines.median)/float64(bashLines.median))
	fmt.Printf("peak memory (max over cases):  %.1f MiB (target <= 25 MiB; woodpecker 40-48 MiB)\n",
		float64(max(ox1.maxRSS, ox20.maxRSS, oxFan.maxRSS, oxLines.maxRSS))/1024)
	fmt.Printf("oxide --version start-up:      %s vs empty Go program %s (+%s; p90 %s vs %s; target <= +3ms)\n",
		ms(oxStart[0]), ms(emptyStart[0]), ms(oxStart[0]-emptyStart[0]), ms(oxStart[1]), ms(emptyStart[1]))
}

// startup runs oxide --version and the empty program n times each (after
// a warm-up), alternately so that both meet the same load, and returns
// the median and 90th percentile wall time of each.
func startup(n int, oxide, empty string) (ox, base [2]time.Duration) {
	var a, b []time.Duration
	timed := func(args ...string) time.Duration {
		start := time.Now()
		check(exec.Command(args[0], args[1:]...).Run())
		return time.Since(start)
	}
	for i := range n + 1 {
		x, y := timed(oxide, "--version"), timed(empty)
		if i > 0 {
			a, b = append(a, x), append(b, y)
		}
	}
	pct := func(ts []time.Duration) [2]time.Duration {
		slices.Sort(ts)
		return [2]time.Duration{ts[len(ts)/2], ts[len(ts)*9/10]}
	}
	return pct(a), pct(b)
}

func parSteps(count int) string {
	var b strings.Builder
	for i := range count {
		fmt.Fprintf(&b, "      - name: par%d\n        run: \"true\"\n", i)
	}
	return b.String()
}

type result struct {
	name   string
	median time.Duration
	maxRSS int64 // KiB, the largest of the runs
}

// measure runs a command n times (after one warm-up) with its output
// discarded into a file and returns the median wall time and peak RSS.
func measure(n int, dir, name string, args ...string) result {
	out, err := os.Create(filepath.Join(dir, "out"))
	check(err)
	defer out.Close()
	var times []time.Duration
	r := result{name: name}
	for i := range n + 1 {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = out, out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
		if i > 0 {
			times = append(times, time.Since(start))
		}
		r.maxRSS = max(r.maxRSS, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
	}
	slices.Sort(times)
	r.median = times[len(times)/2]
	fmt.Fprintf(os.Stderr, "%-34s median %s\n", name, ms(r.median))
	return r
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
