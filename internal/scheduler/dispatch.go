package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// Claim assigns up to limit queued jobs whose labels workerID has, and
// returns them ready to run. A job whose secrets cannot be resolved is
// finished as failed, with the reason, instead of being returned.
func (s *Service) Claim(ctx context.Context, workerID string, labels []string, limit int) ([]spec.Assignment, error) {
	if !s.takes(ctx, workerID) {
		return nil, nil
	}
	jobs, err := s.store.Jobs().Claim(ctx, workerID, labels, limit, s.lease)
	if err != nil {
		return nil, err
	}
	out := make([]spec.Assignment, 0, len(jobs))
	for _, j := range jobs {
		a, ok, err := s.ready(ctx, j)
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// Take claims queued job jobID for workerID, whatever its labels (the
// caller placed it), and returns it ready to run; false if it was taken
// first, is no longer queued, or cannot start (it is finished as failed, as
// Claim does).
func (s *Service) Take(ctx context.Context, jobID, workerID string) (spec.Assignment, bool, error) {
	if !s.takes(ctx, workerID) {
		return spec.Assignment{}, false, nil
	}
	j, err := s.store.Jobs().Take(ctx, jobID, workerID, s.lease)
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
		return spec.Assignment{}, false, nil
	}
	if err != nil {
		return spec.Assignment{}, false, err
	}
	s.needs.forget(jobID)
	return s.ready(ctx, j)
}

// takes reports whether workerID takes new work: not when it is draining,
// offline or lost.
func (s *Service) takes(ctx context.Context, workerID string) bool {
	a, err := s.store.Agents().Get(ctx, workerID)
	return err != nil || a.Status == store.AgentOnline || a.Status == store.AgentBusy
}

// ready makes a claimed job's assignment; false when the job cannot start
// and was finished as failed instead.
func (s *Service) ready(ctx context.Context, j store.Job) (spec.Assignment, bool, error) {
	if j.Attempt > 1 {
		if err := s.AppendLogs(ctx, j.ID, j.RunID, []store.LogLine{attemptLine(j)}); err != nil {
			s.log.Warn("attempt line", "job_id", j.ID, "err", err)
		}
	}
	a, err := s.assignment(ctx, j)
	if err != nil {
		s.log.Warn("job cannot start", "job_id", j.ID, "err", err)
		return spec.Assignment{}, false, s.Finish(ctx, j.Lease(), runner.JobResult{Status: runner.StatusFailure, Err: err})
	}
	return a, true, nil
}

// assignment makes the job of a claimed attempt: a submitted job's from its
// spec, a run's from its compiled run and the run's state (the outputs of
// earlier stages), with the server's secrets resolved.
func (s *Service) assignment(ctx context.Context, j store.Job) (spec.Assignment, error) {
	a := spec.Assignment{Lease: j.Lease(), RunID: j.RunID}
	var refs []spec.SecretRef
	var pipelineID string
	if j.RunID == "" {
		var err error
		if a.Job, refs, err = submittedWork(j); err != nil {
			return spec.Assignment{}, err
		}
		a.Job.JobID, a.Job.Attempt = j.ID, j.Attempt
	} else {
		err := s.store.InTx(ctx, func(tx store.Tx) error {
			st, err := s.load(ctx, tx, j.RunID)
			if err != nil {
				return err
			}
			node := slices.IndexFunc(st.stages, func(sg store.Stage) bool { return sg.ID == j.StageID })
			if node < 0 {
				return fmt.Errorf("job %s: run %s has no stage %s", j.ID, j.RunID, j.StageID)
			}
			if err := s.loadOutputs(ctx, tx, st); err != nil {
				return err
			}
			a.Job = st.m.Job(node, j.ID, st.m.Nodes[node].Attempt)
			refs, pipelineID = st.m.Run.Nodes[node].Secrets, st.run.PipelineID
			return nil
		})
		if err != nil {
			return spec.Assignment{}, err
		}
	}
	var missing []string
	for _, ref := range refs {
		if ref.Provider == "environment" {
			a.LocalSecrets = append(a.LocalSecrets, ref)
			continue
		}
		v, ok, err := s.resolve(ctx, pipelineID, ref)
		if err != nil {
			return spec.Assignment{}, err
		}
		if !ok {
			if ref.Required {
				missing = append(missing, fmt.Sprintf("%s (provider %s, path %s)", ref.Name, ref.Provider, ref.Path))
			}
			continue
		}
		if ref.Key != "" {
			if v, err = secrets.Field(v, ref.Key); err != nil {
				return spec.Assignment{}, fmt.Errorf("secret %s %w", ref.Name, err)
			}
		}
		a.Job.Secrets = append(a.Job.Secrets, spec.Secret{Name: ref.Name, Value: v, Masked: ref.Masked, Step: ref.Step})
	}
	if len(missing) > 0 {
		return spec.Assignment{}, fmt.Errorf("missing required secret %v", missing)
	}
	if e := a.Job.Environment; e != nil && e.Container != nil && e.Container.Registry != nil && e.Container.Registry.PasswordSecret != "" {
		name := e.Container.Registry.PasswordSecret
		v, ok, err := s.resolve(ctx, pipelineID, spec.SecretRef{Name: name, Provider: "oxide"})
		if err != nil {
			return spec.Assignment{}, err
		}
		if !ok {
			return spec.Assignment{}, fmt.Errorf("missing registry password secret %s", name)
		}
		a.RegistryPassword = v
		a.Job.Secrets = append(a.Job.Secrets, spec.Secret{Value: v, Masked: true})
	}
	return a, nil
}

func (s *Service) resolve(ctx context.Context, pipelineID string, ref spec.SecretRef) (string, bool, error) {
	if ref.Provider != "oxide" {
		return "", false, fmt.Errorf("secret %s: provider %s is not configured on this server", ref.Name, ref.Provider)
	}
	if s.secrets == nil {
		return "", false, nil
	}
	return s.secrets.Resolve(ctx, pipelineID, ref)
}

// Start marks a claimed job running, with its stage and run.
func (s *Service) Start(ctx context.Context, l store.Lease) error {
	job, err := s.store.Jobs().Get(ctx, l.JobID)
	if err != nil {
		return err
	}
	return s.inRun(ctx, job.RunID, func(tx store.Tx) error {
		j, err := tx.Jobs().Start(ctx, l)
		if err != nil || j.StageID == "" {
			return err
		}
		if _, err := tx.Stages().SetStatus(ctx, j.StageID, store.StatusRunning); ignoreConflict(err) != nil {
			return err
		}
		r, err := tx.Runs().Get(ctx, j.RunID)
		if err != nil || r.Status == store.RunRunning || r.Status.Done() {
			return err
		}
		_, err = tx.Runs().SetStatus(ctx, j.RunID, store.RunRunning)
		return ignoreConflict(err)
	})
}

// StepUpdate records a step's progress: running when it starts.
func (s *Service) StepUpdate(ctx context.Context, l store.Lease, index int, r runner.StepResult) error {
	steps, err := s.store.Steps().List(ctx, l.JobID)
	if err != nil {
		return err
	}
	if index < 0 || index >= len(steps) {
		return fmt.Errorf("%w: job %s has no step %d", store.ErrInvalid, l.JobID, index)
	}
	_, err = s.store.Steps().Update(ctx, steps[index].ID, stepUpdate(r))
	return ignoreConflict(err)
}

func stepUpdate(r runner.StepResult) store.StepUpdate {
	u := store.StepUpdate{Status: r.Status, Outputs: r.Outputs}
	if r.Status != runner.StatusRunning && r.Status != runner.StatusSkipped && r.Err == nil {
		code := r.ExitCode
		u.ExitCode = &code
	}
	return u
}

// AppendLogs stores log lines of a job of run runID (empty for a job
// submitted directly) and publishes them live. Lines already stored (by
// sequence number) are dropped.
func (s *Service) AppendLogs(ctx context.Context, jobID, runID string, lines []store.LogLine) error {
	if _, err := s.store.Logs().Append(ctx, jobID, lines); err != nil {
		return err
	}
	if s.live == nil || runID == "" {
		return nil
	}
	for _, l := range lines {
		b, _ := json.Marshal(events.StepOutput{
			RunID: runID, StepID: l.StepID, Stream: l.Stream, Line: l.Text, LineNumber: int(l.Seq), Attempt: l.Attempt, Timestamp: l.Time,
		})
		s.live.Publish(events.StepOutputSubject(runID, l.StepID), b)
	}
	return nil
}

// Heartbeat renews the leases of a worker's jobs and returns the IDs it
// still holds: a job it runs that is missing was cancelled or taken away.
func (s *Service) Heartbeat(ctx context.Context, workerID string) ([]string, error) {
	if err := s.store.Agents().Heartbeat(ctx, workerID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return s.store.Jobs().Extend(ctx, workerID, s.lease)
}

// Finish records how a job attempt ended and advances its run. A result
// for a lease that is no longer current (the job was cancelled or given to
// another worker) is ignored.
func (s *Service) Finish(ctx context.Context, l store.Lease, res runner.JobResult) error {
	result := store.Result{Lease: l, State: jobState(res.Status), Error: res.Why()}
	for _, sr := range res.Steps {
		if sr.Status == runner.StatusFailure || sr.Status == runner.StatusTimeout {
			code := sr.ExitCode
			result.ExitCode = &code
		}
	}
	job, err := s.store.Jobs().Get(ctx, l.JobID)
	if err != nil {
		return err
	}
	var stopped []store.Job
	err = s.inRun(ctx, job.RunID, func(tx store.Tx) error {
		done, err := tx.Jobs().Complete(ctx, result)
		if err != nil || len(done) == 0 {
			return err
		}
		j := done[0]
		steps, err := tx.Steps().List(ctx, j.ID)
		if err != nil {
			return err
		}
		for i, sr := range res.Steps {
			if i < len(steps) && !steps[i].Status.Done() {
				if _, err := tx.Steps().Update(ctx, steps[i].ID, stepUpdate(sr)); ignoreConflict(err) != nil {
					return err
				}
			}
		}
		if j.RunID == "" {
			return nil
		}
		status := stageStatus(j.State)
		if res.Status == runner.StatusSkipped {
			status = spec.StatusSkipped
		}
		stopped, err = s.finished(ctx, tx, j, status, j.Error)
		return err
	})
	if err != nil {
		return err
	}
	for _, j := range stopped {
		s.notifyCancel(j.ID, j.Error)
	}
	s.wake()
	return nil
}

// finished tells the machine of j's run that its node ended with status and
// carries out what follows, the node's own End among it. It returns the
// jobs that workers must be told to stop.
func (s *Service) finished(ctx context.Context, tx store.Tx, j store.Job, status spec.Status, reason string) ([]store.Job, error) {
	st, err := s.load(ctx, tx, j.RunID)
	if err != nil || st.run.Status.Done() {
		return nil, err
	}
	node := slices.IndexFunc(st.stages, func(sg store.Stage) bool { return sg.ID == j.StageID })
	if node < 0 || st.jobs[node].ID != j.ID {
		return nil, nil // a job of an earlier attempt of the stage
	}
	// load saw the job done: its node is running until the machine hears.
	if !st.m.Nodes[node].Status.Done() {
		st.m.Nodes[node].Status = spec.StatusRunning
	}
	var outputs map[string]map[string]string
	if status != spec.StatusSkipped && st.m.Run.ReadsOutputs {
		if outputs, err = jobOutputs(ctx, tx, j.ID); err != nil {
			return nil, err
		}
	}
	err = s.next(ctx, tx, st, plan.Finished{Node: node, Status: status, Reason: reason, Outputs: outputs})
	return st.stopped, err
}

// Register records a worker as an agent, online, so that it is listed and
// can be drained.
func (s *Service) Register(ctx context.Context, a store.Agent) (store.Agent, error) {
	return s.store.Agents().Register(ctx, a)
}
