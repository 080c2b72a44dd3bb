// Command queue measures the job queue of the store (claim and complete, no-op
// work) on PostgreSQL and SQLite, in the shape of River's benchmark (`river
// bench`, cmd/river/riverbench), and prints each figure with its ratio to
// River's on this machine:
//
//	export OXIDE_TEST_POSTGRES=$(scripts/postgres.sh)
//	go run ./bench/queue [-runs 3] [-jobs 50000] [-claimers 8] [-batch 250] [-duration 10s]
//
// Modes, as River's: "inserting" keeps at least 75,000 jobs queued, topping
// the queue up in batches of 5,000 every 250 ms, and counts the jobs worked
// in -duration; "backlog" enqueues -jobs in batches of 5,000 (its insert
// rate is printed too), then times working them all. A claimer claims up to
// -batch jobs and completes them as one batch; the defaults put 2,000 jobs in
// flight, as River's bench does (MaxWorkers 2,000). Every state change writes its
// outbox event, as in the server: three per job (queued, assigned,
// succeeded), which River does not have to write. Baselines: River, 18,700
// jobs/s inserting and 25,600 jobs/s on a preloaded backlog. PostgreSQL runs
// in a schema of its own, dropped at the end; without OXIDE_TEST_POSTGRES (or
// -dsn) only SQLite runs. Each mode runs -runs times, on a fresh database
// each time; the median is printed, with the range.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// River's figures on this machine, in jobs per second.
const (
	riverInserting = 18_700
	riverBacklog   = 25_600
)

// River's shape: it inserts in batches of insertBatch and, inserting, keeps
// minQueued jobs waiting.
const (
	insertBatch = 5_000
	minQueued   = 75_000
)

func main() {
	dsn := flag.String("dsn", os.Getenv("OXIDE_TEST_POSTGRES"), "PostgreSQL DSN (default $OXIDE_TEST_POSTGRES)")
	jobs := flag.Int("jobs", 50_000, "jobs in the backlog")
	claimers := flag.Int("claimers", 8, "concurrent claimers")
	batch := flag.Int("batch", 250, "jobs per claim")
	duration := flag.Duration("duration", 10*time.Second, "length of the inserting run")
	runs := flag.Int("runs", 3, "runs of each mode; the median is reported")
	drivers := flag.String("drivers", "postgres,sqlite", "drivers to measure")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process to `file`")
	flag.Parse()
	if *runs < 1 || *claimers < 1 || *batch < 1 || *jobs < 1 {
		fail(fmt.Errorf("-runs, -claimers, -batch and -jobs must be positive"))
	}
	ctx := context.Background()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}

	fmt.Printf("%-9s %-10s %10s %17s %8s  %s\n", "driver", "mode", "jobs/s", "(min-max)", "River", "ratio")
	row := func(driver, mode string, rates []float64, river float64) {
		slices.Sort(rates)
		median := rates[len(rates)/2]
		ratio := "-"
		if river > 0 {
			ratio = fmt.Sprintf("%.2fx", median/river)
		}
		fmt.Printf("%-9s %-10s %10.0f %17s %8s  %s\n", driver, mode, median,
			fmt.Sprintf("(%.0f-%.0f)", rates[0], rates[len(rates)-1]), riverLabel(river), ratio)
	}
	rate := func(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }
	run := func(driver string, open func() (store.Store, func())) {
		var worked, inserted, drained []float64
		for range *runs {
			st, done := open()
			worked = append(worked, rate(inserting(ctx, st, *claimers, *batch, *duration)))
			done()
		}
		row(driver, "inserting", worked, riverInserting)
		for range *runs {
			st, done := open()
			ins, work := backlog(ctx, st, *jobs, *claimers, *batch)
			done()
			inserted, drained = append(inserted, rate(*jobs, ins)), append(drained, rate(*jobs, work))
		}
		row(driver, "insert", inserted, 0)
		row(driver, "backlog", drained, riverBacklog)
	}

	for _, driver := range strings.Split(*drivers, ",") {
		switch {
		case driver == "postgres" && *dsn == "":
			fmt.Fprintln(os.Stderr, "no PostgreSQL: set OXIDE_TEST_POSTGRES (scripts/postgres.sh) or -dsn")
		case driver == "postgres":
			run(driver, func() (store.Store, func()) { return openPostgres(ctx, *dsn) })
		case driver == "sqlite":
			run(driver, func() (store.Store, func()) { return openSQLite(ctx) })
		default:
			fail(fmt.Errorf("unknown driver %q", driver))
		}
	}
}

func riverLabel(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// inserting keeps minQueued jobs queued while claimers work, for d after
// the first fill, and returns the number of jobs worked and the time taken.
func inserting(ctx context.Context, st store.Store, claimers, batch int, d time.Duration) (int, time.Duration) {
	var queued, worked atomic.Int64
	fill := func(ctx context.Context) {
		for queued.Load() < minQueued && ctx.Err() == nil {
			if _, err := st.Jobs().Enqueue(ctx, newJobs(insertBatch)...); err != nil && ctx.Err() == nil {
				fail(err)
			}
			queued.Add(insertBatch)
		}
	}
	fill(ctx)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				fill(ctx)
			}
		}
	})
	for i := range claimers {
		wg.Go(func() {
			for ctx.Err() == nil {
				n, err := work(ctx, st, fmt.Sprintf("w%d", i), batch)
				if err != nil && ctx.Err() == nil {
					fail(err)
				}
				queued.Add(-int64(n))
				worked.Add(int64(n))
				if n == 0 && ctx.Err() == nil {
					time.Sleep(time.Millisecond) // the queue ran dry: the inserter is behind
				}
			}
		})
	}
	wg.Wait()
	return int(worked.Load()), time.Since(start)
}

// backlog enqueues n jobs, then works them all, and returns both times.
func backlog(ctx context.Context, st store.Store, n, claimers, batch int) (insert, worked time.Duration) {
	start := time.Now()
	for left := n; left > 0; left -= insertBatch {
		if _, err := st.Jobs().Enqueue(ctx, newJobs(min(left, insertBatch))...); err != nil {
			fail(err)
		}
	}
	insert = time.Since(start)
	start = time.Now()
	var wg sync.WaitGroup
	var total atomic.Int64
	for i := range claimers {
		wg.Go(func() {
			for {
				k, err := work(ctx, st, fmt.Sprintf("w%d", i), batch)
				if err != nil {
					fail(err)
				}
				if k == 0 {
					return
				}
				total.Add(int64(k))
			}
		})
	}
	wg.Wait()
	worked = time.Since(start)
	if int(total.Load()) != n {
		fail(fmt.Errorf("worked %d jobs of %d", total.Load(), n))
	}
	return insert, worked
}

// work claims up to batch jobs, does nothing with them, and completes them.
func work(ctx context.Context, st store.Store, worker string, batch int) (int, error) {
	js, err := st.Jobs().Claim(ctx, worker, nil, batch, time.Minute)
	if err != nil || len(js) == 0 {
		return 0, err
	}
	rs := make([]store.Result, len(js))
	for i, j := range js {
		rs[i] = store.Result{Lease: j.Lease(), State: store.JobSucceeded, ExitCode: new(int)}
	}
	done, err := st.Jobs().Complete(ctx, rs...)
	return len(done), err
}

func newJobs(n int) []store.Job {
	js := make([]store.Job, n)
	for i := range js {
		js[i] = store.Job{Name: "noop", Spec: []byte(`{"command":"true"}`)}
	}
	return js
}

// openPostgres opens the store in a new schema, dropped by the returned func.
func openPostgres(ctx context.Context, dsn string) (store.Store, func()) {
	b := make([]byte, 6)
	rand.Read(b)
	schema := "bench_" + hex.EncodeToString(b)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		fail(err)
	}
	if _, err := admin.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		fail(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		fail(fmt.Errorf("-dsn must be a URL here: %w", err))
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	st, err := postgres.Open(ctx, u.String())
	if err != nil {
		fail(err)
	}
	return st, func() {
		st.Close()
		if _, err := admin.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			fail(err)
		}
		admin.Close(ctx)
	}
}

// openSQLite opens the store on a new file, removed by the returned func.
func openSQLite(ctx context.Context) (store.Store, func()) {
	dir, err := os.MkdirTemp("", "oxide-bench-")
	if err != nil {
		fail(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "oxide.db"))
	if err != nil {
		fail(err)
	}
	return st, func() {
		st.Close()
		os.RemoveAll(dir)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "queue:", err)
	os.Exit(1)
}
