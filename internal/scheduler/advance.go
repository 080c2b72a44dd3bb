package scheduler

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/store"
)

// runState is a run's stages and jobs as stored, indexed by node.
type runState struct {
	run    store.Run
	rg     *runGraph
	stages []store.Stage // by node index
	jobs   []store.Job   // by node index
}

// inRun runs fn in a transaction that holds run runID's lock from its
// start (none for a job outside a run). Every transaction that changes a
// run's stages or jobs takes the run's lock before any other row of the
// run, here or in load, so that servers sharing a database take turns on a
// run and never deadlock over its rows.
func (s *Service) inRun(ctx context.Context, runID string, fn func(tx store.Tx) error) error {
	return s.store.InTx(ctx, func(tx store.Tx) error {
		if runID != "" {
			if _, err := tx.Runs().Lock(ctx, runID); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

// load reads a run's state inside tx, locking the run first so that no
// other server changes it until tx ends.
func (s *Service) load(ctx context.Context, tx store.Tx, runID string) (*runState, error) {
	run, err := tx.Runs().Lock(ctx, runID)
	if err != nil {
		return nil, err
	}
	rg, err := s.graph(run)
	if err != nil {
		return nil, err
	}
	st := &runState{run: run, rg: rg, stages: make([]store.Stage, len(rg.graph.Nodes)), jobs: make([]store.Job, len(rg.graph.Nodes))}
	stages, err := tx.Stages().List(ctx, runID)
	if err != nil {
		return nil, err
	}
	byID := map[string]int{}
	for _, sg := range stages {
		if sg.Index < len(st.stages) {
			st.stages[sg.Index] = sg
			byID[sg.ID] = sg.Index
		}
	}
	jobs, err := tx.Jobs().List(ctx, store.JobFilter{RunID: runID})
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if i, ok := byID[j.StageID]; ok {
			st.jobs[i] = j
		}
	}
	return st, nil
}

// failed reports, for every node, whether its dependents must treat it as
// failed: it failed, timed out or was cancelled, or it was skipped while one
// of its dependencies had failed. Nodes are in topological order.
func (st *runState) failed() []bool {
	out := make([]bool, len(st.stages))
	for _, n := range st.rg.graph.Nodes {
		switch st.stages[n.Index].Status {
		case store.StatusFailure, store.StatusTimeout, store.StatusCancelled:
			out[n.Index] = true
		case store.StatusSkipped:
			for _, d := range n.Deps {
				out[n.Index] = out[n.Index] || out[d.Index]
			}
		}
	}
	return out
}

// active counts the instances of a node's stage whose jobs are queued or
// being worked on, for max_parallel.
func (st *runState) active(n *plan.Node) int {
	c := 0
	for _, m := range st.rg.graph.Nodes {
		if m.Source == n.Source {
			switch st.jobs[m.Index].State {
			case store.JobQueued, store.JobAssigned, store.JobRunning:
				c++
			}
		}
	}
	return c
}

// advance decides, inside tx, what happens next in run runID: it queues the
// jobs of stages whose dependencies are done and that pass their gate,
// skips the others, and ends the run when every stage is done.
func (s *Service) advance(ctx context.Context, tx store.Tx, runID string) error {
	st, err := s.load(ctx, tx, runID)
	if err != nil || st.run.Status.Done() {
		return err
	}
	if blocked, err := s.blockedByGroup(ctx, tx, st); err != nil || blocked {
		return err
	}
	var values map[string]any // expression values, loaded when a gate needs them
	for _, n := range st.rg.graph.Nodes {
		sg, job := st.stages[n.Index], st.jobs[n.Index]
		if sg.Status != store.StatusPending || job.State != store.JobPending || !depsDone(st, n) {
			continue
		}
		var failedDep *plan.Node
		failed := st.failed()
		for _, d := range n.Deps {
			if failed[d.Index] {
				failedDep = d
				break
			}
		}
		if values == nil {
			if values, err = s.values(ctx, tx, st, n); err != nil {
				return err
			}
		}
		if n.Matrix != nil {
			values["matrix"] = n.Matrix
		} else {
			delete(values, "matrix")
		}
		d := plan.Gate(n, failedDep, values, "")
		switch d.Verdict {
		case plan.Start:
			if m := n.Source.Matrix; m != nil && m.MaxParallel > 0 && st.active(n) >= m.MaxParallel {
				continue
			}
			if _, err := tx.Jobs().Queue(ctx, job.ID); err != nil {
				return err
			}
			st.jobs[n.Index].State = store.JobQueued
		case plan.AwaitApproval:
			if st.stages[n.Index], err = tx.Stages().SetStatus(ctx, sg.ID, store.StatusWaiting); err != nil {
				return err
			}
			if _, err := s.openGate(ctx, tx, st, n); err != nil {
				return err
			}
		default:
			status := store.StatusSkipped
			if d.Verdict == plan.Fail {
				status = store.StatusFailure
			}
			if err := s.endStage(ctx, tx, st, n, status, d.Reason); err != nil {
				return err
			}
		}
	}
	return s.settle(ctx, tx, st)
}

func depsDone(st *runState, n *plan.Node) bool {
	for _, d := range n.Deps {
		if !st.stages[d.Index].Status.Done() {
			return false
		}
	}
	return true
}

// endStage finishes a stage that will not run (or no longer runs) with
// status, cancelling its job with reason.
func (s *Service) endStage(ctx context.Context, tx store.Tx, st *runState, n *plan.Node, status store.Status, reason string) error {
	sg, err := tx.Stages().SetStatus(ctx, st.stages[n.Index].ID, status)
	if err = ignoreConflict(err); err != nil {
		return err
	}
	if sg.ID != "" {
		st.stages[n.Index] = sg
	}
	if j := st.jobs[n.Index]; !j.State.Done() {
		j, err := tx.Jobs().Cancel(ctx, j.ID, reason)
		if err = ignoreConflict(err); err != nil {
			return err
		}
		if j.ID != "" {
			st.jobs[n.Index] = j
		}
	}
	return nil
}

// settle sets the run's status from its stages: running once a job has
// started (or an approved stage is on its way), waiting while only
// approvals are pending, and its final status when every stage is done.
func (s *Service) settle(ctx context.Context, tx store.Tx, st *runState) error {
	done, waiting, active, bad := true, false, false, false
	failed := st.failed()
	for i, sg := range st.stages {
		switch {
		case sg.Status == store.StatusWaiting:
			waiting, done = true, false
		case !sg.Status.Done():
			done = false
			j := st.jobs[i].State
			active = active || sg.Status == store.StatusRunning || j == store.JobAssigned || j == store.JobRunning
		case failed[i] && sg.Status != store.StatusSkipped:
			bad = true
		}
	}
	want := st.run.Status
	switch {
	case done && bad:
		want = store.RunFailure
	case done:
		want = store.RunSuccess
	case active:
		want = store.RunRunning
	case waiting:
		want = store.RunWaiting
	case st.run.Status == store.RunWaiting: // between stages after an approval
		want = store.RunRunning
	}
	if want == st.run.Status {
		return nil
	}
	run, err := tx.Runs().SetStatus(ctx, st.run.ID, want)
	if err = ignoreConflict(err); err != nil {
		return err
	}
	if run.ID != "" {
		st.run = run
	}
	if want.Done() {
		s.forget(st.run.ID)
		return s.releaseGroup(ctx, tx, st)
	}
	return nil
}

// values are the expression values that the conditions of a run's stages
// see: git facts, variables, and the outputs of the steps done so far.
func (s *Service) values(ctx context.Context, tx store.Tx, st *runState, n *plan.Node) (map[string]any, error) {
	v := gitValues(st.rg.trigger)
	v["run_id"] = st.run.ID
	vars := map[string]any{}
	for _, kv := range st.rg.pipeline.Variables {
		vars[kv.Name], v[kv.Name] = kv.Value, kv.Value
	}
	for k, val := range st.rg.trigger.Variables {
		vars[k], v[k] = val, val
	}
	v["variables"] = vars
	steps, err := s.outputs(ctx, tx, st)
	if err != nil {
		return nil, err
	}
	v["steps"] = steps
	return v, nil
}

// outputs are steps.<key>.outputs of the run's finished jobs.
func (s *Service) outputs(ctx context.Context, tx store.Tx, st *runState) (map[string]any, error) {
	out := map[string]any{}
	for i, j := range st.jobs {
		if j.ID == "" || !j.State.Done() || st.stages[i].Status == store.StatusSkipped {
			continue
		}
		steps, err := tx.Steps().List(ctx, j.ID)
		if err != nil {
			return nil, err
		}
		for _, step := range steps {
			if len(step.Outputs) == 0 {
				continue
			}
			o := make(map[string]any, len(step.Outputs))
			for k, val := range step.Outputs {
				o[k] = val
			}
			out[step.Key] = map[string]any{"outputs": o}
		}
	}
	return out, nil
}

// blockedByGroup reports whether an older run of the same concurrency group
// is still in progress, so that this one must wait.
func (s *Service) blockedByGroup(ctx context.Context, tx store.Tx, st *runState) (bool, error) {
	if st.rg.trigger.Group == "" || st.run.Status != store.RunQueued {
		return false, nil
	}
	others, err := s.groupRuns(ctx, tx, st.run.PipelineID, st.rg.trigger.Group)
	if err != nil {
		return false, err
	}
	for _, r := range others {
		if r.Number < st.run.Number { // in progress, or queued before this one
			return true, nil
		}
	}
	return false, nil
}

// releaseGroup starts the oldest queued run of a finished run's group.
func (s *Service) releaseGroup(ctx context.Context, tx store.Tx, st *runState) error {
	if st.rg.trigger.Group == "" {
		return nil
	}
	others, err := s.groupRuns(ctx, tx, st.run.PipelineID, st.rg.trigger.Group)
	if err != nil {
		return err
	}
	for _, r := range others {
		if r.Status == store.RunQueued && r.ID != st.run.ID {
			return s.advance(ctx, tx, r.ID)
		}
	}
	return nil
}

// groupRuns returns the unfinished runs of a pipeline in group, oldest first.
func (s *Service) groupRuns(ctx context.Context, tx store.Tx, pipelineID, group string) ([]store.Run, error) {
	var out []store.Run
	for _, status := range []store.RunStatus{store.RunQueued, store.RunRunning, store.RunWaiting} {
		runs, err := tx.Runs().List(ctx, store.RunFilter{PipelineID: pipelineID, Status: status})
		if err != nil {
			return nil, err
		}
		for _, r := range runs {
			var t Trigger
			if json.Unmarshal(r.Trigger, &t) == nil && t.Group == group {
				out = append(out, r)
			}
		}
	}
	slices.SortFunc(out, func(a, b store.Run) int { return a.Number - b.Number })
	return out, nil
}

// cancelGroup cancels the other unfinished runs of a new run's concurrency
// group (cancel_in_progress) and returns the jobs it cancelled, so that
// their workers are told.
func (s *Service) cancelGroup(ctx context.Context, tx store.Tx, run store.Run, group string) ([]store.Job, error) {
	others, err := s.groupRuns(ctx, tx, run.PipelineID, group)
	if err != nil {
		return nil, err
	}
	var cancelled []store.Job
	for _, r := range others {
		if r.ID == run.ID {
			continue
		}
		jobs, err := s.stopRun(ctx, tx, r.ID, store.RunCancelled, "cancelled by a newer run of concurrency group "+group)
		if err != nil {
			return nil, err
		}
		cancelled = append(cancelled, jobs...)
	}
	return cancelled, nil
}
