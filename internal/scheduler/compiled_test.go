package scheduler

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// TestStoredCompiledRunAdvances: a run is advanced by its stored compiled
// run alone. The run here was stored "by an earlier version": its pipeline
// definition no longer parses and its compiled run says what no YAML of
// today compiles to (a step's command edited in the stored form, and a
// field this version does not know). Its stages still start, with the
// stored commands, and the run finishes.
func TestStoredCompiledRunAdvances(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := New(Config{Store: st})

	p, err := pipeline.Parse("old.yaml", []byte(`version: "1"
name: old
stages:
  - {name: build, steps: [{name: compile, run: "make"}]}
  - {name: test, steps: [{name: unit, run: "make test"}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := plan.Compile(p, plan.Trigger{Branch: "main"})
	if err != nil {
		t.Fatal(err)
	}
	c.Nodes[1].Job.Steps[0].Run = "echo stored form"
	b, _ := c.Encode()
	var stored map[string]any
	json.Unmarshal(b, &stored)
	stored["from_a_later_release"] = true
	b, _ = json.Marshal(stored)

	sp, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "old", Definition: "stages: [this no longer parses"})
	if err != nil {
		t.Fatal(err)
	}
	var run store.Run
	err = st.InTx(ctx, func(tx store.Tx) error {
		if run, err = tx.Runs().Create(ctx, store.Run{PipelineID: sp.ID, Trigger: b}); err != nil {
			return err
		}
		if err := svc.createStages(ctx, tx, run, c); err != nil {
			return err
		}
		return svc.advance(ctx, tx, run.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"make", "echo stored form"} {
		as, err := svc.Claim(ctx, "w1", nil, 1)
		if err != nil || len(as) != 1 {
			t.Fatalf("claim %d: %v, %d jobs", i+1, err, len(as))
		}
		if got := as[0].Job.Steps[0].Run; got != want {
			t.Errorf("stage %d runs %q, want %q", i+1, got, want)
		}
		if err := svc.Start(ctx, as[0].Lease); err != nil {
			t.Fatal(err)
		}
		if err := svc.Finish(ctx, as[0].Lease, runner.JobResult{Status: spec.StatusSuccess, Steps: []runner.StepResult{{Status: spec.StatusSuccess}}}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := st.Runs().Get(ctx, run.ID); err != nil || r.Status != store.RunSuccess {
		t.Fatalf("run %s, %v; want success", r.Status, err)
	}
}
