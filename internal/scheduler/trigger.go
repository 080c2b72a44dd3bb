package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/oxide-ci/oxide/internal/expr"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/store"
)

// workSpec is what the store keeps of a stage's job: the runner's job
// without secret values, and the references resolved when it is claimed.
type workSpec struct {
	Job         runner.Job            `json:"job"`
	Environment *pipeline.Environment `json:"environment,omitempty"`
	Secrets     []secretRef           `json:"secrets,omitempty"`
	PipelineID  string                `json:"pipeline_id,omitempty"`
}

// secretRef is a secret reference of a stage (Step empty) or of one step.
type secretRef struct {
	pipeline.SecretRef
	Step string `json:"step,omitempty"`
}

// TriggerRun plans a run of the pipeline and stores it with its stages,
// jobs and steps; the jobs of its root stages are queued at once, unless
// another run of the same concurrency group is in progress.
func (s *Service) TriggerRun(ctx context.Context, pipelineID string, req TriggerRequest) (store.Run, error) {
	sp, err := s.store.Pipelines().Get(ctx, pipelineID)
	if err != nil {
		if p, err2 := s.store.Pipelines().GetByName(ctx, pipelineID); err2 == nil {
			sp, err = p, nil
		}
	}
	if err != nil {
		return store.Run{}, err
	}
	p, err := pipeline.Parse("pipeline.yaml", []byte(sp.Definition))
	if err != nil {
		return store.Run{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	g, err := plan.Build(p)
	if err != nil {
		return store.Run{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	t := Trigger{Event: req.Event, Branch: req.Branch, SHA: req.SHA, Ref: req.Ref, Variables: req.Variables, Actor: req.Actor, Definition: sp.Definition}
	if t.Event == "" {
		t.Event = "api"
	}
	if t.Ref == "" && t.Branch != "" {
		t.Ref = "refs/heads/" + t.Branch
	}
	if c := p.Concurrency; c != nil && c.Group != "" {
		t.Group, err = expr.Interpolate(c.Group, &expr.Context{Values: gitValues(t)})
		if err != nil {
			return store.Run{}, fmt.Errorf("%w: concurrency group: %w", ErrInvalid, err)
		}
	}
	trig, err := json.Marshal(t)
	if err != nil {
		return store.Run{}, err
	}
	var run store.Run
	var cancelled []store.Job
	err = s.store.InTx(ctx, func(tx store.Tx) error {
		run, err = tx.Runs().Create(ctx, store.Run{PipelineID: sp.ID, Trigger: trig, GitRef: t.Ref, GitSHA: t.SHA})
		if err != nil {
			return err
		}
		rg := &runGraph{pipeline: p, graph: g, trigger: t}
		if err := s.createStages(ctx, tx, run, sp.ID, rg); err != nil {
			return err
		}
		if t.Group != "" && p.Concurrency.CancelInProgress {
			if cancelled, err = s.cancelGroup(ctx, tx, run, t.Group); err != nil {
				return err
			}
		}
		if err := s.advance(ctx, tx, run.ID); err != nil { // a run of a busy group stays queued
			return err
		}
		run, err = tx.Runs().Get(ctx, run.ID) // as committed: workers may start it at once
		return err
	})
	if err != nil {
		return store.Run{}, err
	}
	for _, j := range cancelled {
		s.notifyCancel(j.ID, j.Error)
	}
	s.wake()
	return run, nil
}

// createStages stores one stage, one pending job and its steps per node.
func (s *Service) createStages(ctx context.Context, tx store.Tx, run store.Run, pipelineID string, rg *runGraph) error {
	stages := make([]store.Stage, len(rg.graph.Nodes))
	for i, n := range rg.graph.Nodes {
		var m json.RawMessage
		if n.Matrix != nil {
			m, _ = json.Marshal(n.Matrix)
		}
		stages[i] = store.Stage{RunID: run.ID, Index: n.Index, Name: n.Name, Matrix: m}
	}
	stages, err := tx.Stages().Create(ctx, stages...)
	if err != nil {
		return err
	}
	jobs := make([]store.Job, len(rg.graph.Nodes))
	for i, n := range rg.graph.Nodes {
		spec, err := json.Marshal(s.spec(run, pipelineID, rg, n))
		if err != nil {
			return err
		}
		jobs[i] = store.Job{
			RunID: run.ID, StageID: stages[i].ID, Name: n.Name, Spec: spec, State: store.JobPending,
			Labels: agentLabels(n.Stage), MaxAttempts: store.DefaultMaxAttempts,
		}
	}
	jobs, err = tx.Jobs().Enqueue(ctx, jobs...)
	if err != nil {
		return err
	}
	var steps []store.Step
	for i, n := range rg.graph.Nodes {
		for k, st := range n.Stage.Steps {
			steps = append(steps, store.Step{JobID: jobs[i].ID, Index: k, Name: st.Name, Key: st.ID})
		}
	}
	_, err = tx.Steps().Create(ctx, steps...)
	return err
}

// spec is the job of node n, without values that are known only when it
// is claimed (outputs of earlier stages, secrets).
func (s *Service) spec(run store.Run, pipelineID string, rg *runGraph, n *plan.Node) workSpec {
	p := rg.pipeline
	vars := append(append(pipeline.Vars{}, p.Variables...), n.Stage.Variables...)
	for _, k := range slices.Sorted(maps.Keys(rg.trigger.Variables)) {
		vars = append(vars, pipeline.Var{Name: k, Value: rg.trigger.Variables[k]})
	}
	values := gitValues(rg.trigger)
	values["run_id"] = run.ID
	if n.Matrix != nil {
		values["matrix"] = n.Matrix
	}
	env := n.Stage.Environment
	if env == nil {
		env = p.Environment
	}
	ws := workSpec{
		Job: runner.Job{
			RunID: run.ID, Stage: n.Name, Steps: n.Stage.Steps, Parallel: n.Stage.Parallel,
			Timeout: n.Stage.Timeout, Variables: vars, Values: values,
		},
		Environment: env,
		PipelineID:  pipelineID,
	}
	for _, r := range n.Stage.Secrets {
		ws.Secrets = append(ws.Secrets, secretRef{SecretRef: r})
	}
	for _, st := range n.Stage.Steps {
		for _, r := range st.Secrets {
			ws.Secrets = append(ws.Secrets, secretRef{SecretRef: r, Step: st.ID})
		}
	}
	return ws
}

// gitValues are the expression values of a trigger.
func gitValues(t Trigger) map[string]any {
	return map[string]any{"branch": t.Branch, "sha": t.SHA, "ref": t.Ref, "event": t.Event}
}

func agentLabels(s *pipeline.Stage) []string {
	if s.Agent == nil {
		return nil
	}
	var out []string
	for _, l := range s.Agent.Labels {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
