package storetest

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

func testPipelines(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	ps := st.Pipelines()

	p, err := ps.Create(ctx, store.Pipeline{Name: "web", Repository: "https://example.com/web.git", Definition: "version: \"1\"\n"})
	noErr(t, err)
	if p.ID == "" || !p.CreatedAt.Equal(p.UpdatedAt) {
		t.Fatalf("created %+v", p)
	}
	fresh(t, "CreatedAt", p.CreatedAt)
	got, err := ps.Get(ctx, p.ID)
	noErr(t, err)
	equal(t, got, p)
	got, err = ps.GetByName(ctx, "web")
	noErr(t, err)
	equal(t, got, p)

	_, err = ps.Create(ctx, store.Pipeline{Name: "web"})
	wantErr(t, err, store.ErrConflict)
	_, err = ps.Create(ctx, store.Pipeline{})
	wantErr(t, err, store.ErrInvalid)
	_, err = ps.Get(ctx, "no-such-id")
	wantErr(t, err, store.ErrNotFound)
	_, err = ps.GetByName(ctx, "nope")
	wantErr(t, err, store.ErrNotFound)

	p.Name, p.Definition = "api", "version: \"1\"\nname: api\n"
	up, err := ps.Update(ctx, p)
	noErr(t, err)
	if up.Name != "api" || up.Definition != p.Definition || !up.CreatedAt.Equal(p.CreatedAt) || up.UpdatedAt.Before(p.UpdatedAt) {
		t.Fatalf("updated %+v", up)
	}
	_, err = ps.Update(ctx, store.Pipeline{ID: "no-such-id", Name: "x"})
	wantErr(t, err, store.ErrNotFound)

	b, err := ps.Create(ctx, store.Pipeline{Name: "batch"})
	noErr(t, err)
	list, err := ps.List(ctx)
	noErr(t, err)
	equal(t, list, []store.Pipeline{up, b})

	noErr(t, ps.Delete(ctx, p.ID))
	_, err = ps.Get(ctx, p.ID)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, ps.Delete(ctx, p.ID), store.ErrNotFound)

	equal(t, eventTypes(t, st, p.ID), []string{"pipeline.created", "pipeline.updated", "pipeline.deleted"})
	var payload store.Pipeline
	lastPayload(t, st, p.ID, "pipeline.updated", &payload)
	equal(t, payload, up)
}

func testRuns(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	rs := st.Runs()
	p, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	noErr(t, err)
	q, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "q"})
	noErr(t, err)

	r1, err := rs.Create(ctx, store.Run{PipelineID: p.ID, Trigger: json.RawMessage(`{"event":"push","actor":"ann"}`), GitRef: "refs/heads/main", GitSHA: "abc"})
	noErr(t, err)
	if r1.Number != 1 || r1.Status != store.RunQueued || r1.StartedAt != nil || r1.FinishedAt != nil {
		t.Fatalf("created %+v", r1)
	}
	fresh(t, "CreatedAt", r1.CreatedAt)
	r2, err := rs.Create(ctx, store.Run{PipelineID: p.ID})
	noErr(t, err)
	q1, err := rs.Create(ctx, store.Run{PipelineID: q.ID})
	noErr(t, err)
	if r2.Number != 2 || q1.Number != 1 {
		t.Fatalf("run numbers %d, %d; want 2, 1", r2.Number, q1.Number)
	}
	got, err := rs.Get(ctx, r1.ID)
	noErr(t, err)
	equal(t, got, r1)
	got, err = rs.GetByNumber(ctx, p.ID, 2)
	noErr(t, err)
	equal(t, got, r2)
	_, err = rs.GetByNumber(ctx, p.ID, 3)
	wantErr(t, err, store.ErrNotFound)

	_, err = rs.Create(ctx, store.Run{PipelineID: "no-such-pipeline"})
	wantErr(t, err, store.ErrNotFound)
	_, err = rs.Create(ctx, store.Run{PipelineID: p.ID, Trigger: json.RawMessage(`{bad`)})
	wantErr(t, err, store.ErrInvalid)
	_, err = rs.Create(ctx, store.Run{PipelineID: p.ID, Status: "bogus"})
	wantErr(t, err, store.ErrInvalid)

	running, err := rs.SetStatus(ctx, r1.ID, store.RunRunning)
	noErr(t, err)
	if running.StartedAt == nil || running.FinishedAt != nil {
		t.Fatalf("running %+v", running)
	}
	fresh(t, "StartedAt", *running.StartedAt)
	waiting, err := rs.SetStatus(ctx, r1.ID, store.RunWaiting)
	noErr(t, err)
	again, err := rs.SetStatus(ctx, r1.ID, store.RunRunning)
	noErr(t, err)
	if !waiting.StartedAt.Equal(*running.StartedAt) || !again.StartedAt.Equal(*running.StartedAt) {
		t.Fatalf("StartedAt moved: %v, %v, %v", running.StartedAt, waiting.StartedAt, again.StartedAt)
	}
	done, err := rs.SetStatus(ctx, r1.ID, store.RunSuccess)
	noErr(t, err)
	if done.FinishedAt == nil || done.FinishedAt.Before(*done.StartedAt) {
		t.Fatalf("done %+v", done)
	}
	_, err = rs.SetStatus(ctx, r1.ID, store.RunFailure)
	wantErr(t, err, store.ErrConflict)
	_, err = rs.SetStatus(ctx, "no-such-run", store.RunFailure)
	wantErr(t, err, store.ErrNotFound)
	_, err = rs.SetStatus(ctx, r2.ID, "bogus")
	wantErr(t, err, store.ErrInvalid)

	list, err := rs.List(ctx, store.RunFilter{PipelineID: p.ID})
	noErr(t, err)
	equal(t, list, []store.Run{r2, done})
	list, err = rs.List(ctx, store.RunFilter{Status: store.RunSuccess})
	noErr(t, err)
	equal(t, list, []store.Run{done})
	list, err = rs.List(ctx, store.RunFilter{})
	noErr(t, err)
	equal(t, list, []store.Run{q1, r2, done})
	list, err = rs.List(ctx, store.RunFilter{Limit: 1, Offset: 1})
	noErr(t, err)
	equal(t, list, []store.Run{r2})

	equal(t, eventTypes(t, st, r1.ID), []string{"run.queued", "run.running", "run.waiting", "run.running", "run.success"})
	var payload store.Run
	lastPayload(t, st, r1.ID, "run.success", &payload)
	equal(t, payload, done)
}

// testRunNumbers creates runs of one pipeline from two stores at once: the
// numbers are 1..n, each once.
func testRunNumbers(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	stores := []store.Store{openStore(t, open), openStore(t, open)}
	p, err := stores[0].Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	noErr(t, err)

	const goroutines, each = 4, 10
	var (
		mu      sync.Mutex
		numbers []int
		wg      sync.WaitGroup
		errs    = make(chan error, len(stores)*goroutines)
	)
	for _, st := range stores {
		for range goroutines {
			wg.Go(func() {
				for range each {
					r, err := st.Runs().Create(ctx, store.Run{PipelineID: p.ID})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					numbers = append(numbers, r.Number)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(numbers)
	for i, n := range numbers {
		if n != i+1 {
			t.Fatalf("run numbers %v: want 1..%d", numbers, len(stores)*goroutines*each)
		}
	}
}

// testRunLock checks that a run locked in one store's transaction is not
// locked by another store's transaction before the first one ends.
func testRunLock(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	a, b := openStore(t, open), openStore(t, open)
	p, err := a.Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	noErr(t, err)
	r, err := a.Runs().Create(ctx, store.Run{PipelineID: p.ID})
	noErr(t, err)

	var (
		mu    sync.Mutex
		order []string
		wg    sync.WaitGroup
	)
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	err = a.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Runs().Lock(ctx, r.ID); err != nil {
			return err
		}
		note("a locked")
		wg.Go(func() {
			err := b.InTx(ctx, func(tx store.Tx) error {
				_, err := tx.Runs().Lock(ctx, r.ID)
				note("b locked")
				return err
			})
			if err != nil {
				t.Error(err)
			}
		})
		time.Sleep(200 * time.Millisecond) // time enough for b to take the lock, were it free
		note("a commits")
		return nil
	})
	noErr(t, err)
	wg.Wait()
	if !slices.Equal(order, []string{"a locked", "a commits", "b locked"}) {
		t.Errorf("order %v: b locked the run while a held it", order)
	}
	if got, err := a.Runs().Lock(ctx, r.ID); err != nil || got.ID != r.ID {
		t.Errorf("Lock outside a transaction: %+v, %v", got, err)
	}
}

func testStagesAndSteps(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	p, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	noErr(t, err)
	r, err := st.Runs().Create(ctx, store.Run{PipelineID: p.ID})
	noErr(t, err)

	ss, err := st.Stages().Create(ctx,
		store.Stage{RunID: r.ID, Index: 0, Name: "build"},
		store.Stage{RunID: r.ID, Index: 1, Name: "test", Matrix: json.RawMessage(`{"os":"linux","go":"1.26"}`)})
	noErr(t, err)
	if len(ss) != 2 || ss[0].Status != store.StatusPending || ss[1].ID == "" {
		t.Fatalf("created %+v", ss)
	}
	_, err = st.Stages().Create(ctx, store.Stage{RunID: r.ID, Index: 1, Name: "dup"})
	wantErr(t, err, store.ErrConflict)
	_, err = st.Stages().Create(ctx, store.Stage{RunID: "no-such-run", Name: "x"})
	wantErr(t, err, store.ErrNotFound)
	list, err := st.Stages().List(ctx, r.ID)
	noErr(t, err)
	equal(t, list, ss)
	got, err := st.Stages().Get(ctx, ss[1].ID)
	noErr(t, err)
	equal(t, got, ss[1])

	build, err := st.Stages().SetStatus(ctx, ss[0].ID, store.StatusRunning)
	noErr(t, err)
	if build.StartedAt == nil {
		t.Fatalf("running stage %+v", build)
	}
	skipped, err := st.Stages().SetStatus(ctx, ss[1].ID, store.StatusSkipped)
	noErr(t, err)
	if skipped.StartedAt != nil || skipped.FinishedAt == nil {
		t.Fatalf("skipped stage %+v", skipped)
	}
	_, err = st.Stages().SetStatus(ctx, ss[1].ID, store.StatusRunning)
	wantErr(t, err, store.ErrConflict)

	js, err := st.Jobs().Enqueue(ctx, store.Job{RunID: r.ID, StageID: ss[0].ID, Name: "build"})
	noErr(t, err)
	job := js[0]
	steps, err := st.Steps().Create(ctx,
		store.Step{JobID: job.ID, Index: 0, Name: "checkout", Key: "co"},
		store.Step{JobID: job.ID, Index: 1, Name: "make"})
	noErr(t, err)
	_, err = st.Steps().Create(ctx, store.Step{JobID: "no-such-job", Name: "x"})
	wantErr(t, err, store.ErrNotFound)
	_, err = st.Steps().Create(ctx, store.Step{JobID: job.ID, Index: 0, Name: "dup"})
	wantErr(t, err, store.ErrConflict)

	s0, err := st.Steps().Update(ctx, steps[0].ID, store.StepUpdate{Status: store.StatusRunning})
	noErr(t, err)
	if s0.StartedAt == nil || s0.ExitCode != nil {
		t.Fatalf("running step %+v", s0)
	}
	s0, err = st.Steps().Update(ctx, steps[0].ID, store.StepUpdate{Status: store.StatusSuccess, ExitCode: ptr(0), Outputs: map[string]string{"version": "1.2.3"}})
	noErr(t, err)
	if s0.FinishedAt == nil || s0.ExitCode == nil || *s0.ExitCode != 0 || s0.Outputs["version"] != "1.2.3" || s0.Key != "co" {
		t.Fatalf("finished step %+v", s0)
	}
	_, err = st.Steps().Update(ctx, steps[0].ID, store.StepUpdate{Status: store.StatusFailure})
	wantErr(t, err, store.ErrConflict)
	_, err = st.Steps().Update(ctx, "no-such-step", store.StepUpdate{Status: store.StatusFailure})
	wantErr(t, err, store.ErrNotFound)
	stepList, err := st.Steps().List(ctx, job.ID)
	noErr(t, err)
	equal(t, stepList, []store.Step{s0, steps[1]})
	equal(t, eventTypes(t, st, s0.ID), []string{"step.pending", "step.running", "step.success"})
	var payload store.Step
	lastPayload(t, st, s0.ID, "step.success", &payload)
	equal(t, payload, s0)

	// Deleting the pipeline deletes everything under it.
	noErr(t, st.Pipelines().Delete(ctx, p.ID))
	_, err = st.Runs().Get(ctx, r.ID)
	wantErr(t, err, store.ErrNotFound)
	_, err = st.Stages().Get(ctx, ss[0].ID)
	wantErr(t, err, store.ErrNotFound)
	_, err = st.Jobs().Get(ctx, job.ID)
	wantErr(t, err, store.ErrNotFound)
	_, err = st.Steps().Get(ctx, s0.ID)
	wantErr(t, err, store.ErrNotFound)
}

func testTemplates(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	ts := st.Templates()

	tpl, err := ts.Create(ctx, store.Template{Name: "deploy", Description: "Deploy a service",
		Spec:       json.RawMessage(`{"command":"deploy ${{ params.service }}"}`),
		Parameters: json.RawMessage(`[{"name":"service","type":"string","required":true}]`)})
	noErr(t, err)
	if tpl.ID == "" || tpl.Version != 1 {
		t.Fatalf("created %+v", tpl)
	}
	_, err = ts.Create(ctx, store.Template{Name: "deploy"})
	wantErr(t, err, store.ErrConflict)
	got, err := ts.GetByName(ctx, "deploy")
	noErr(t, err)
	equal(t, got, tpl)

	tpl.Description = "Deploy one service"
	up, err := ts.Update(ctx, tpl)
	noErr(t, err)
	if up.Version != 2 || up.Description != tpl.Description || string(up.Spec) != string(tpl.Spec) {
		t.Fatalf("updated %+v", up)
	}
	got, err = ts.Get(ctx, tpl.ID)
	noErr(t, err)
	equal(t, got, up)
	other, err := ts.Create(ctx, store.Template{Name: "backup"})
	noErr(t, err)
	list, err := ts.List(ctx)
	noErr(t, err)
	equal(t, list, []store.Template{other, up})

	noErr(t, ts.Delete(ctx, tpl.ID))
	_, err = ts.Get(ctx, tpl.ID)
	wantErr(t, err, store.ErrNotFound)
	_, err = ts.Update(ctx, tpl)
	wantErr(t, err, store.ErrNotFound)
	equal(t, eventTypes(t, st, tpl.ID), []string{"template.created", "template.updated", "template.deleted"})
}
