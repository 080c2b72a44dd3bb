package scheduler

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/store"
)

// TriggerRun compiles the pipeline with the trigger and stores the
// compiled run with its stages, jobs and steps; the jobs of its root
// stages are queued at once, unless another run of the same concurrency
// group is in progress. The run.trigger audit entry, by req.Actor, is
// written in the same transaction.
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
	t := plan.Trigger{Event: req.Event, Branch: req.Branch, SHA: req.SHA, Ref: req.Ref, Variables: req.Variables, Actor: req.Actor}
	c, err := plan.Compile(p, t)
	if err != nil {
		return store.Run{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b, err := c.Encode()
	if err != nil {
		return store.Run{}, err
	}
	var run store.Run
	var cancelled []store.Job
	err = s.store.InTx(ctx, func(tx store.Tx) error {
		run, err = tx.Runs().Create(ctx, store.Run{PipelineID: sp.ID, Trigger: b, GitRef: c.Trigger.Ref, GitSHA: c.Trigger.SHA})
		if err != nil {
			return err
		}
		if err := s.createStages(ctx, tx, run, c); err != nil {
			return err
		}
		if c.Group != "" && c.CancelInProgress {
			if cancelled, err = s.cancelGroup(ctx, tx, run, c.Group); err != nil {
				return err
			}
		}
		if err := s.advance(ctx, tx, run.ID); err != nil { // a run of a busy group stays queued
			return err
		}
		if run, err = tx.Runs().Get(ctx, run.ID); err != nil { // as committed: workers may start it at once
			return err
		}
		return record(ctx, tx, req.Actor, "run.trigger", "run", run.ID, map[string]any{
			"pipeline_id": sp.ID, "pipeline": sp.Name, "run_number": run.Number, "branch": req.Branch, "event": req.Event,
		})
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
func (s *Service) createStages(ctx context.Context, tx store.Tx, run store.Run, c *plan.Run) error {
	stages := make([]store.Stage, len(c.Nodes))
	for i, n := range c.Nodes {
		var m json.RawMessage
		if n.Job.Matrix != nil {
			m, _ = json.Marshal(n.Job.Matrix)
		}
		stages[i] = store.Stage{RunID: run.ID, Index: n.Index, Name: n.Name, Matrix: m}
	}
	stages, err := tx.Stages().Create(ctx, stages...)
	if err != nil {
		return err
	}
	jobs := make([]store.Job, len(c.Nodes))
	for i, n := range c.Nodes {
		spec, err := json.Marshal(n.Job) // what the job runs, for people: workers get it from the compiled run
		if err != nil {
			return err
		}
		jobs[i] = store.Job{
			RunID: run.ID, StageID: stages[i].ID, Name: n.Name, Spec: spec, State: store.JobPending,
			Labels: n.Labels, MaxAttempts: store.DefaultMaxAttempts,
		}
	}
	jobs, err = tx.Jobs().Enqueue(ctx, jobs...)
	if err != nil {
		return err
	}
	var steps []store.Step // one batch for the whole run
	for i, n := range c.Nodes {
		steps = stepRows(steps, jobs[i].ID, n.Job.Steps)
	}
	_, err = tx.Steps().Create(ctx, steps...)
	return err
}
