package scheduler_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/postgres/pgtest"
	"github.com/oxide-ci/oxide/internal/worker"
)

// TestTwoServersOnePostgres runs a 40-instance matrix on two control planes
// (two connection pools, two scheduler services, two workers each) sharing
// one real PostgreSQL database: every instance runs exactly once, and the
// run ends once, successfully.
func TestTwoServersOnePostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := t.Context()
	var services []*scheduler.Service
	var stores []store.Store
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 2 {
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		svc := scheduler.New(scheduler.Config{Store: st, Lease: 10 * time.Second})
		services, stores = append(services, svc), append(stores, st)
		go svc.Run(wctx, 100*time.Millisecond)
		for k := range 2 {
			w := &worker.Worker{ID: fmt.Sprintf("server%d-worker%d", i, k), Dir: t.TempDir(), Control: svc}
			go runWorker(wctx, svc, w, 2, 20*time.Millisecond)
		}
	}
	out := filepath.Join(t.TempDir(), "ran")
	p, err := stores[0].Pipelines().Create(ctx, store.Pipeline{Name: "wide", Definition: `
version: "1"
name: wide
stages:
  - name: m
    matrix:
      a: [0, 1, 2, 3, 4, 5, 6, 7]
      b: [0, 1, 2, 3, 4]
    steps:
      - name: s
        run: echo "${{ matrix.a }}-${{ matrix.b }} $OXIDE_JOB_ID" >> "$OUT"
  - name: after
    steps: [{name: s, run: echo "after $OXIDE_JOB_ID" >> "$OUT"}]
`})
	if err != nil {
		t.Fatal(err)
	}
	r, err := services[1].TriggerRun(ctx, p.ID, scheduler.TriggerRequest{Variables: map[string]string{"OUT": out}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := stores[0].Runs().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Done() {
			if got.Status != store.RunSuccess {
				t.Fatalf("run: %s", got.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			jobs, _ := stores[0].Jobs().List(ctx, store.JobFilter{RunID: r.ID})
			stages, _ := stores[0].Stages().List(ctx, r.ID)
			for i, j := range jobs {
				t.Logf("job %s: %s (stage %s)", j.Name, j.State, stages[i].Status)
			}
			t.Fatalf("run still %s", got.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 41 {
		t.Fatalf("%d stage instances ran, want 41:\n%s", len(lines), b)
	}
	slices.Sort(lines)
	if len(slices.Compact(lines)) != 41 {
		t.Errorf("an instance ran twice:\n%s", b)
	}
	jobs, err := stores[1].Jobs().List(ctx, store.JobFilter{RunID: r.ID})
	if err != nil {
		t.Fatal(err)
	}
	workers := map[string]bool{}
	for _, j := range jobs {
		if j.State != store.JobSucceeded || j.Attempt != 1 {
			t.Errorf("job %s: %s, attempt %d", j.Name, j.State, j.Attempt)
		}
		workers[j.WorkerID] = true
	}
	t.Logf("%d jobs ran on %d workers", len(jobs), len(workers))
}
