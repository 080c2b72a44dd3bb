package scheduler

import (
	"context"
	"fmt"
	"slices"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// runState is a run as stored, with the state machine rebuilt from it.
type runState struct {
	run    store.Run
	m      *plan.Machine
	stages []store.Stage // by node index
	jobs   []store.Job   // the latest job of each node
	// stopped are the jobs that workers hold and must be told to stop.
	stopped []store.Job
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
// other server changes it until tx ends, and rebuilds its machine: a node
// whose job is queued or held is running; its attempt is the number of
// jobs its stage has had.
func (s *Service) load(ctx context.Context, tx store.Tx, runID string) (*runState, error) {
	run, err := tx.Runs().Lock(ctx, runID)
	if err != nil {
		return nil, err
	}
	c, err := s.compiled(run)
	if err != nil {
		return nil, err
	}
	st := &runState{run: run, m: plan.NewMachine(run.ID, c), stages: make([]store.Stage, len(c.Nodes)), jobs: make([]store.Job, len(c.Nodes))}
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
	for _, j := range jobs { // oldest first: the latest job of a stage wins
		if i, ok := byID[j.StageID]; ok {
			st.jobs[i] = j
			st.m.Nodes[i].Attempt++
		}
	}
	for i, sg := range st.stages {
		ns := &st.m.Nodes[i]
		ns.Status = sg.Status
		switch st.jobs[i].State {
		case store.JobQueued, store.JobAssigned, store.JobRunning:
			if !ns.Status.Done() {
				ns.Status = spec.StatusRunning
			}
		}
	}
	return st, nil
}

// loadOutputs reads the outputs of the steps of the nodes done so far into
// the machine, when an expression of the run reads them: the gates of later
// nodes and their jobs see them.
func (s *Service) loadOutputs(ctx context.Context, tx store.Tx, st *runState) error {
	if !st.m.Run.ReadsOutputs {
		return nil
	}
	for i, j := range st.jobs {
		ns := &st.m.Nodes[i]
		if j.ID == "" || !j.State.Done() || !ns.Status.Done() || ns.Status == spec.StatusSkipped || ns.Outputs != nil {
			continue
		}
		var err error
		if ns.Outputs, err = jobOutputs(ctx, tx, j.ID); err != nil {
			return err
		}
	}
	return nil
}

// jobOutputs are the outputs of a job's steps: step id → key → value.
func jobOutputs(ctx context.Context, tx store.Tx, jobID string) (map[string]map[string]string, error) {
	steps, err := tx.Steps().List(ctx, jobID)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for _, step := range steps {
		if len(step.Outputs) > 0 {
			out[step.Key] = step.Outputs
		}
	}
	return out, nil
}

// next feeds ev to the run's machine and carries out its actions in tx.
func (s *Service) next(ctx context.Context, tx store.Tx, st *runState, ev plan.Event) error {
	if err := s.loadOutputs(ctx, tx, st); err != nil {
		return err
	}
	for _, a := range st.m.Next(ev) {
		var err error
		switch a := a.(type) {
		case plan.Start:
			err = s.startNode(ctx, tx, st, a)
		case plan.Wait:
			if st.stages[a.Node], err = tx.Stages().SetStatus(ctx, st.stages[a.Node].ID, store.StatusWaiting); err == nil {
				_, err = s.openGate(ctx, tx, st, a.Node)
			}
		case plan.End:
			j := st.jobs[a.Node]
			if err = s.endStage(ctx, tx, st, a.Node, a.Status, a.Reason); err == nil && a.Stop &&
				(j.State == store.JobAssigned || j.State == store.JobRunning) {
				st.stopped = append(st.stopped, st.jobs[a.Node])
			}
		case plan.Finish:
			err = s.finishRun(ctx, tx, st, store.RunStatus(a.Status))
		}
		if err != nil {
			return err
		}
	}
	if st.m.Done() {
		return nil
	}
	return s.settle(ctx, tx, st)
}

// startNode queues a node's job: its pending first job, or, for a stage
// retry, a new job that the queue holds back for the retry's delay.
func (s *Service) startNode(ctx context.Context, tx store.Tx, st *runState, a plan.Start) error {
	prev := st.jobs[a.Node]
	if a.Attempt == 1 {
		jobs, err := tx.Jobs().Queue(ctx, prev.ID)
		if len(jobs) == 1 {
			st.jobs[a.Node] = jobs[0]
		}
		return err
	}
	at := now().Add(a.Delay)
	jobs, err := tx.Jobs().Enqueue(ctx, store.Job{
		RunID: prev.RunID, StageID: prev.StageID, Name: prev.Name, Spec: prev.Spec, Labels: prev.Labels,
		Priority: prev.Priority, MaxAttempts: prev.MaxAttempts, State: store.JobQueued, QueuedAt: &at,
	})
	if err != nil {
		return err
	}
	st.jobs[a.Node] = jobs[0]
	if err := s.createSteps(ctx, tx, jobs[0].ID, st.m.Run.Nodes[a.Node].Job.Steps); err != nil {
		return err
	}
	text := fmt.Sprintf("stage attempt %d of %d after %s", a.Attempt, st.m.Run.Nodes[a.Node].Retry.MaxAttempts, prev.State)
	if prev.Error != "" {
		text += ": " + prev.Error
	}
	if a.Delay > 0 {
		text += fmt.Sprintf(", in %s", a.Delay)
	}
	_, err = tx.Logs().Append(ctx, jobs[0].ID, []store.LogLine{{Seq: 1, Attempt: 1, Stream: "system", Text: text, Time: now()}})
	return err
}

// createSteps stores the steps of a job.
func (s *Service) createSteps(ctx context.Context, tx store.Tx, jobID string, steps []*spec.Step) error {
	_, err := tx.Steps().Create(ctx, stepRows(nil, jobID, steps)...)
	return err
}

// stepRows appends to rows the store's rows of a job's steps.
func stepRows(rows []store.Step, jobID string, steps []*spec.Step) []store.Step {
	for k, st := range steps {
		rows = append(rows, store.Step{JobID: jobID, Index: k, Name: st.Name, Key: st.ID})
	}
	return rows
}

// advance asks run runID's machine what can happen now, inside tx.
func (s *Service) advance(ctx context.Context, tx store.Tx, runID string) error {
	st, err := s.load(ctx, tx, runID)
	if err != nil || st.run.Status.Done() {
		return err
	}
	if blocked, err := s.blockedByGroup(ctx, tx, st); err != nil || blocked {
		return err
	}
	return s.next(ctx, tx, st, plan.Advance{})
}

// endStage ends node i's stage with status, and cancels its job with
// reason when the job is not done.
func (s *Service) endStage(ctx context.Context, tx store.Tx, st *runState, i int, status spec.Status, reason string) error {
	sg, err := tx.Stages().SetStatus(ctx, st.stages[i].ID, status)
	if err = ignoreConflict(err); err != nil {
		return err
	}
	if sg.ID != "" {
		st.stages[i] = sg
	}
	if j := st.jobs[i]; !j.State.Done() {
		j, err := tx.Jobs().Cancel(ctx, j.ID, reason)
		if err = ignoreConflict(err); err != nil {
			return err
		}
		if j.ID != "" {
			st.jobs[i] = j
		}
	}
	return nil
}

// settle sets the status of a run under way: running once a job has
// started (or an approved stage is on its way), waiting while only
// approvals are pending.
func (s *Service) settle(ctx context.Context, tx store.Tx, st *runState) error {
	waiting, active := false, false
	for i, sg := range st.stages {
		j := st.jobs[i].State
		switch {
		case sg.Status == store.StatusWaiting:
			waiting = true
		case !sg.Status.Done():
			active = active || sg.Status == store.StatusRunning || j == store.JobAssigned || j == store.JobRunning
		}
	}
	want := st.run.Status
	switch {
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
	return s.setRunStatus(ctx, tx, st, want)
}

// finishRun ends the run with status and starts the next run of its
// concurrency group.
func (s *Service) finishRun(ctx context.Context, tx store.Tx, st *runState, status store.RunStatus) error {
	if err := s.setRunStatus(ctx, tx, st, status); err != nil {
		return err
	}
	s.forget(st.run.ID)
	return s.releaseGroup(ctx, tx, st)
}

func (s *Service) setRunStatus(ctx context.Context, tx store.Tx, st *runState, status store.RunStatus) error {
	run, err := tx.Runs().SetStatus(ctx, st.run.ID, status)
	if err = ignoreConflict(err); err != nil {
		return err
	}
	if run.ID != "" {
		st.run = run
	}
	return nil
}

// blockedByGroup reports whether an older run of the same concurrency group
// is still in progress, so that this one must wait.
func (s *Service) blockedByGroup(ctx context.Context, tx store.Tx, st *runState) (bool, error) {
	if st.m.Run.Group == "" || st.run.Status != store.RunQueued {
		return false, nil
	}
	others, err := s.groupRuns(ctx, tx, st.run.PipelineID, st.m.Run.Group)
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
	if st.m.Run.Group == "" {
		return nil
	}
	others, err := s.groupRuns(ctx, tx, st.run.PipelineID, st.m.Run.Group)
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
			if c, err := s.compiled(r); err == nil && c.Group == group {
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
		jobs, err := s.stopRun(ctx, tx, r.ID, spec.StatusCancelled, "cancelled by a newer run of concurrency group "+group)
		if err != nil {
			return nil, err
		}
		cancelled = append(cancelled, jobs...)
	}
	return cancelled, nil
}
