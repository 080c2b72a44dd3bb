package scheduler_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
	"github.com/oxide-ci/oxide/internal/worker"
)

// bundle is a control plane on a real SQLite database, with in-process
// workers that run steps on this machine.
type bundle struct {
	store store.Store
	svc   *scheduler.Service
}

func setup(t *testing.T, workers int) *bundle {
	t.Helper()
	return setupStore(t, workers, func(st store.Store) store.Store { return st })
}

// setupStore is setup with the service over wrap of the database.
func setupStore(t *testing.T, workers int, wrap func(store.Store) store.Store) *bundle {
	t.Helper()
	ctx := t.Context()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := wrap(db)
	svc := scheduler.New(scheduler.Config{Store: st, Lease: 5 * time.Second})
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for i := range workers {
			w := &worker.Worker{ID: "w" + string(rune('1'+i)), Dir: t.TempDir(), Grace: 200 * time.Millisecond, Control: svc}
			go runWorker(wctx, svc, w, 2, 50*time.Millisecond)
		}
		svc.Run(wctx, 100*time.Millisecond)
	}()
	return &bundle{store: st, svc: svc}
}

func (b *bundle) pipeline(t *testing.T, def string) store.Pipeline {
	t.Helper()
	p, err := b.store.Pipelines().Create(t.Context(), store.Pipeline{Name: t.Name() + "-" + store.NewID()[:8], Definition: def})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (b *bundle) trigger(t *testing.T, def string, req scheduler.TriggerRequest) store.Run {
	t.Helper()
	r, err := b.svc.TriggerRun(t.Context(), b.pipeline(t, def).ID, req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitRun polls until the run is in one of want's statuses.
func (b *bundle) waitRun(t *testing.T, id string, want ...store.RunStatus) store.Run {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := b.store.Runs().Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(want, r.Status) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is %s, want %v", id, r.Status, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bundle) stages(t *testing.T, runID string) map[string]store.Status {
	t.Helper()
	stages, err := b.store.Stages().List(t.Context(), runID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Status{}
	for _, s := range stages {
		out[s.Name] = s.Status
	}
	return out
}

// logs returns the text of every log line of the run's stage named name.
func (b *bundle) logs(t *testing.T, runID, stage string) []string {
	t.Helper()
	jobs, _ := b.store.Jobs().List(t.Context(), store.JobFilter{RunID: runID})
	stages, _ := b.store.Stages().List(t.Context(), runID)
	var out []string
	for _, s := range stages {
		if s.Name != stage {
			continue
		}
		for _, j := range jobs {
			if j.StageID == s.ID {
				lines, err := b.store.Logs().Read(t.Context(), j.ID, 0, 1000)
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range lines {
					out = append(out, l.Text)
				}
			}
		}
	}
	return out
}

func TestRunDAGWithMatrixAndOutputs(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	r := b.trigger(t, `
version: "1"
name: dag
variables:
  WHO: world
stages:
  - name: build
    steps:
      - name: version
        id: ver
        run: echo "version=1.2.3" >> "$OXIDE_OUTPUT"; echo built
  - name: test
    matrix:
      os: [linux, bsd]
    steps:
      - name: check
        run: echo "hello $WHO on ${{ matrix.os }} with ${{ steps.ver.outputs.version }} from ${{ branch }}"
  - name: deploy
    condition: branch == 'main'
    steps:
      - name: ship
        run: echo shipping
`, scheduler.TriggerRequest{Branch: "feature", Variables: map[string]string{"WHO": "tester"}})
	r = b.waitRun(t, r.ID, store.RunSuccess, store.RunFailure)
	if r.Status != store.RunSuccess || r.Number != 1 {
		t.Fatalf("run %d: %s", r.Number, r.Status)
	}
	want := map[string]store.Status{"build": store.StatusSuccess, "test (linux)": store.StatusSuccess, "test (bsd)": store.StatusSuccess, "deploy": store.StatusSkipped}
	if got := b.stages(t, r.ID); !equalMaps(got, want) {
		t.Errorf("stages %v, want %v", got, want)
	}
	if got := b.logs(t, r.ID, "test (bsd)"); !slices.Equal(got, []string{"hello tester on bsd with 1.2.3 from feature"}) {
		t.Errorf("logs of test (bsd): %q", got)
	}
	steps := b.steps(t, r.ID, "build")
	if len(steps) != 1 || steps[0].Status != store.StatusSuccess || steps[0].Outputs["version"] != "1.2.3" || steps[0].ExitCode == nil || *steps[0].ExitCode != 0 {
		t.Errorf("build steps: %+v", steps)
	}
}

func (b *bundle) steps(t *testing.T, runID, stage string) []store.Step {
	t.Helper()
	jobs, _ := b.store.Jobs().List(t.Context(), store.JobFilter{RunID: runID})
	stages, _ := b.store.Stages().List(t.Context(), runID)
	for _, s := range stages {
		for _, j := range jobs {
			if s.Name == stage && j.StageID == s.ID {
				steps, err := b.store.Steps().List(t.Context(), j.ID)
				if err != nil {
					t.Fatal(err)
				}
				return steps
			}
		}
	}
	return nil
}

func equalMaps[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestFailureSkipsDependentsAndFailFast(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	r := b.trigger(t, `
version: "1"
name: fail
stages:
  - name: m
    matrix:
      n: [1, 2]
    steps:
      - name: s
        run: if [ ${{ matrix.n }} = 1 ]; then exit 4; fi; sleep 30
  - name: after
    steps: [{name: s, run: "true"}]
  - name: cleanup
    depends_on: [m]
    condition: always()
    steps: [{name: s, run: echo cleaning}]
`, scheduler.TriggerRequest{})
	r = b.waitRun(t, r.ID, store.RunSuccess, store.RunFailure)
	if r.Status != store.RunFailure {
		t.Fatalf("run: %s", r.Status)
	}
	want := map[string]store.Status{"m (1)": store.StatusFailure, "m (2)": store.StatusCancelled, "after": store.StatusSkipped, "cleanup": store.StatusSuccess}
	if got := b.stages(t, r.ID); !equalMaps(got, want) {
		t.Errorf("stages %v, want %v", got, want)
	}
	if s := b.steps(t, r.ID, "m (1)"); len(s) != 1 || s[0].ExitCode == nil || *s[0].ExitCode != 4 {
		t.Errorf("m (1) steps: %+v", s)
	}
}

func TestCancelRun(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	r := b.trigger(t, `
version: "1"
name: long
stages:
  - name: a
    steps: [{name: s, run: "echo started; sleep 30"}]
  - name: b
    steps: [{name: s, run: "true"}]
`, scheduler.TriggerRequest{})
	deadline := time.Now().Add(10 * time.Second)
	for len(b.logs(t, r.ID, "a")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stage a never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if _, err := b.svc.CancelRun(t.Context(), r.ID, "tester"); err != nil {
		t.Fatal(err)
	}
	r = b.waitRun(t, r.ID, store.RunCancelled)
	want := map[string]store.Status{"a": store.StatusCancelled, "b": store.StatusCancelled}
	if got := b.stages(t, r.ID); !equalMaps(got, want) {
		t.Errorf("stages %v, want %v", got, want)
	}
	if _, err := b.svc.CancelRun(t.Context(), r.ID, "tester"); !errorsIs(err, store.ErrConflict) {
		t.Errorf("cancelling a cancelled run: %v, want a conflict", err)
	}
	// The worker is free again well before the step's 30 s: it was killed.
	r2 := b.trigger(t, "version: \"1\"\nname: quick\nstages:\n  - name: q\n    steps: [{name: s, run: \"true\"}]\n", scheduler.TriggerRequest{})
	b.waitRun(t, r2.ID, store.RunSuccess)
	if time.Since(start) > 15*time.Second {
		t.Errorf("the cancelled step kept its worker busy")
	}
}

func errorsIs(err, target error) bool {
	return err != nil && strings.Contains(err.Error(), target.Error())
}

func TestApproval(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const def = `
version: "1"
name: gated
stages:
  - name: build
    steps: [{name: s, run: "true"}]
  - name: deploy
    approval: {required: true, approvers: [ops]}
    steps: [{name: s, run: echo deployed}]
`
	r := b.trigger(t, def, scheduler.TriggerRequest{})
	b.waitRun(t, r.ID, store.RunWaiting)
	if _, err := b.svc.Approve(t.Context(), r.ID, "build", scheduler.Vote{Approve: true, Actor: "ops"}); err == nil {
		t.Error("approving a stage that waits for nothing succeeded")
	}
	if _, err := b.svc.Approve(t.Context(), r.ID, "deploy", scheduler.Vote{Approve: true, Actor: "ops", Comment: "ship it"}); err != nil {
		t.Fatal(err)
	}
	b.waitRun(t, r.ID, store.RunSuccess)
	if got := b.logs(t, r.ID, "deploy"); !slices.Equal(got, []string{"deployed"}) {
		t.Errorf("deploy logs %q", got)
	}

	r = b.trigger(t, def, scheduler.TriggerRequest{})
	b.waitRun(t, r.ID, store.RunWaiting)
	if _, err := b.svc.Approve(t.Context(), r.ID, "deploy", scheduler.Vote{Actor: "ops", Comment: "not today"}); err != nil {
		t.Fatal(err)
	}
	r = b.waitRun(t, r.ID, store.RunFailure, store.RunSuccess)
	if got := b.stages(t, r.ID)["deploy"]; got != store.StatusCancelled || r.Status != store.RunFailure {
		t.Errorf("rejected: stage %s, run %s", got, r.Status)
	}
}

func TestConcurrencyGroup(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	def := func(cancel bool) string {
		return `
version: "1"
name: grouped
concurrency:
  group: deploy-${{ branch }}
  cancel_in_progress: ` + map[bool]string{true: "true", false: "false"}[cancel] + `
stages:
  - name: s
    steps: [{name: s, run: "sleep 0.5"}]
`
	}
	p := b.pipeline(t, def(false))
	r1, err := b.svc.TriggerRun(t.Context(), p.ID, scheduler.TriggerRequest{Branch: "main"})
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := b.svc.TriggerRun(t.Context(), p.ID, scheduler.TriggerRequest{Branch: "main"})
	other, _ := b.svc.TriggerRun(t.Context(), p.ID, scheduler.TriggerRequest{Branch: "dev"})
	if got, _ := b.store.Runs().Get(t.Context(), r2.ID); got.Status != store.RunQueued {
		t.Errorf("second run of the group: %s, want queued", got.Status)
	}
	b.waitRun(t, other.ID, store.RunSuccess) // another group does not wait
	b.waitRun(t, r1.ID, store.RunSuccess)
	b.waitRun(t, r2.ID, store.RunSuccess)
	first, _ := b.store.Runs().Get(t.Context(), r1.ID)
	second, _ := b.store.Runs().Get(t.Context(), r2.ID)
	if second.StartedAt == nil || first.FinishedAt == nil || second.StartedAt.Before(*first.FinishedAt) {
		t.Errorf("runs of one group overlapped: first finished %v, second started %v", first.FinishedAt, second.StartedAt)
	}

	p2 := b.pipeline(t, def(true))
	r3, _ := b.svc.TriggerRun(t.Context(), p2.ID, scheduler.TriggerRequest{Branch: "main"})
	r4, _ := b.svc.TriggerRun(t.Context(), p2.ID, scheduler.TriggerRequest{Branch: "main"})
	b.waitRun(t, r3.ID, store.RunCancelled)
	b.waitRun(t, r4.ID, store.RunSuccess)
}

func TestSubmittedJobAndLeaseExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	ctx := t.Context()
	j, err := b.svc.SubmitJob(ctx, jobspec.Spec{Name: "hello", Command: "echo hi from a job", MaxAttempts: 2}, "tester")
	if err != nil {
		t.Fatal(err)
	}
	// A test client claims the job and vanishes: its lease expires and the
	// job goes back to the queue with its next attempt.
	svc := scheduler.New(scheduler.Config{Store: b.store, Lease: 100 * time.Millisecond})
	as, err := svc.Claim(ctx, "ghost", nil, 1)
	if err != nil || len(as) != 1 || as[0].Lease.Attempt != 1 {
		t.Fatalf("claim: %v %+v", err, as)
	}
	if got := as[0].Job.Steps; len(got) != 1 || got[0].Run != "echo hi from a job" {
		t.Fatalf("work: %+v", got)
	}
	time.Sleep(150 * time.Millisecond) // let the 100 ms lease lapse
	if err := svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	// A stale result of the lost attempt is ignored.
	if err := svc.Finish(ctx, as[0].Lease, runner.JobResult{Status: runner.StatusSuccess}); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.store.Jobs().Get(ctx, j.ID); got.State != store.JobQueued {
		t.Fatalf("after the lease expired: %s, want queued", got.State)
	}
	w := &worker.Worker{ID: "real", Dir: t.TempDir(), Control: b.svc}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go runWorker(wctx, b.svc, w, 1, 20*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := b.store.Jobs().Get(ctx, j.ID)
		if got.State == store.JobSucceeded {
			if got.Attempt != 2 || got.WorkerID != "real" {
				t.Errorf("job ran as attempt %d on %s", got.Attempt, got.WorkerID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job is %s", got.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Attempt 2's log opens with why attempt 1 failed: its worker is no
	// agent, so its lease expired, and no agent was lost.
	lines, _ := b.store.Logs().Read(ctx, j.ID, 0, 10)
	if len(lines) != 2 || lines[0].Stream != "system" || lines[0].Text != "attempt 2 of 2 after lease expired" ||
		lines[1].Text != "hi from a job" || lines[0].Attempt != 2 || lines[1].Attempt != 2 {
		t.Errorf("logs %+v", lines)
	}
	steps, _ := b.store.Steps().List(ctx, j.ID)
	if len(steps) != 1 || steps[0].Name != "hello" || steps[0].Status != store.StatusSuccess || steps[0].ExitCode == nil || *steps[0].ExitCode != 0 {
		t.Errorf("steps of the submitted job: %+v", steps)
	}
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	r := b.trigger(t, `
version: "1"
name: slow
timeout_minutes: 1
stages:
  - name: a
    steps: [{name: s, timeout: 1s, run: sleep 30}]
`, scheduler.TriggerRequest{})
	r = b.waitRun(t, r.ID, store.RunFailure, store.RunTimeout)
	if got := b.stages(t, r.ID)["a"]; got != store.StatusTimeout {
		t.Errorf("stage a: %s, want timeout", got)
	}
}

// TestInfrastructureFailureIsRetried: a job that its worker cannot run (it
// has no Docker engine for the container the stage asks for) is not the
// job's failure: it goes back for its next attempt, and fails with the
// reason once its attempts are spent.
func TestInfrastructureFailureIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	r := b.trigger(t, `version: "1"
name: infra
stages:
  - name: build
    environment: {type: container, container: {image: "busybox"}}
    steps: [{name: s, run: "true"}]
`, scheduler.TriggerRequest{})
	b.waitRun(t, r.ID, store.RunFailure)
	jobs, err := b.store.Jobs().List(t.Context(), store.JobFilter{RunID: r.ID})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("%d jobs, %v", len(jobs), err)
	}
	if j := jobs[0]; j.State != store.JobFailed || j.Attempt != j.MaxAttempts || !strings.Contains(j.Error, "cannot run containers") {
		t.Errorf("job %s after attempt %d of %d: %q", j.State, j.Attempt, j.MaxAttempts, j.Error)
	}
}
