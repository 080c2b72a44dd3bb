package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// SubmitJob queues a job submitted directly (not part of a run), with its
// steps. The store keeps the spec as given; it becomes the runner's job
// when claimed. The job.submit audit entry, by actor, is written in the
// same transaction.
func (s *Service) SubmitJob(ctx context.Context, spec jobspec.Spec, actor string) (store.Job, error) {
	jobs, err := s.SubmitJobs(ctx, []jobspec.Spec{spec}, actor)
	if err != nil {
		return store.Job{}, err
	}
	return jobs[0], nil
}

// SubmitJobs queues jobs submitted directly, all or none, in one
// transaction with a job.submit audit entry each by actor.
func (s *Service) SubmitJobs(ctx context.Context, specs []jobspec.Spec, actor string) ([]store.Job, error) {
	queued := make([]store.Job, len(specs))
	for i, spec := range specs {
		if err := spec.Validate(); err != nil {
			return nil, err
		}
		b, err := json.Marshal(spec)
		if err != nil {
			return nil, err
		}
		queued[i] = store.Job{Name: spec.Name, Spec: b, Labels: spec.Labels, Priority: spec.Priority, MaxAttempts: spec.MaxAttempts}
	}
	var jobs []store.Job
	err := s.store.InTx(ctx, func(tx store.Tx) (err error) {
		if jobs, err = tx.Jobs().Enqueue(ctx, queued...); err != nil {
			return err
		}
		for _, job := range jobs {
			work, _, err := submittedWork(job)
			if err != nil {
				return err
			}
			if err := s.createSteps(ctx, tx, job.ID, work.Steps); err != nil {
				return err
			}
			if err := record(ctx, tx, actor, "job.submit", "job", job.ID, map[string]string{"name": job.Name}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.wake()
	return jobs, nil
}

// CancelJob cancels a job that is not done and tells its worker. A job of a
// run ends its stage as cancelled, and the run goes on as after a failure.
// The job.cancel audit entry, by actor, is written in the same transaction.
func (s *Service) CancelJob(ctx context.Context, id, actor string) (store.Job, error) {
	j, err := s.store.Jobs().Get(ctx, id)
	if err != nil {
		return store.Job{}, err
	}
	var stopped []store.Job
	err = s.inRun(ctx, j.RunID, func(tx store.Tx) (err error) {
		if j, err = tx.Jobs().Cancel(ctx, id, "cancelled by "+actor); err != nil {
			return err
		}
		if j.RunID != "" {
			if stopped, err = s.finished(ctx, tx, j, spec.StatusCancelled, j.Error); err != nil {
				return err
			}
		}
		return record(ctx, tx, actor, "job.cancel", "job", j.ID, nil)
	})
	if err != nil {
		return store.Job{}, err
	}
	s.notifyCancel(j.ID, j.Error)
	for _, o := range stopped {
		s.notifyCancel(o.ID, o.Error)
	}
	return j, nil
}

// DrainAgent marks an agent draining: it finishes its jobs and takes no
// new ones. The agent.drain audit entry, by actor, is written in the same
// transaction.
func (s *Service) DrainAgent(ctx context.Context, id, actor string) (store.Agent, error) {
	var a store.Agent
	err := s.store.InTx(ctx, func(tx store.Tx) (err error) {
		if a, err = tx.Agents().SetStatus(ctx, id, store.AgentDraining); err != nil {
			return err
		}
		return record(ctx, tx, actor, "agent.drain", "agent", a.ID, map[string]string{"name": a.Name})
	})
	if err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

// submittedWork turns the spec of a job submitted directly into the job a
// worker runs — its command or steps, environment variables, timeout and
// image — and its secret references (by name, organization scope).
func submittedWork(j store.Job) (spec.Job, []spec.SecretRef, error) {
	js, err := jobspec.Decode(j.Spec)
	if err != nil {
		return spec.Job{}, nil, fmt.Errorf("job %s: spec: %w", j.ID, err)
	}
	work := spec.Job{Version: spec.Version, Stage: js.Name, Timeout: js.TimeoutDuration()}
	if js.Command != "" {
		work.Steps = append(work.Steps, &spec.Step{Name: js.Name, ID: "command", Run: js.Command, Shell: js.Shell})
	}
	for i, st := range js.Steps {
		shell := st.Shell
		if shell == "" {
			shell = js.Shell
		}
		work.Steps = append(work.Steps, &spec.Step{Name: st.Name, ID: fmt.Sprintf("step-%d", i+1), Run: st.Run, Shell: shell})
	}
	for _, k := range slices.Sorted(maps.Keys(js.Env)) {
		work.Variables = append(work.Variables, spec.Var{Name: k, Value: js.Env[k]})
	}
	var refs []spec.SecretRef
	for _, name := range js.Secrets {
		refs = append(refs, spec.SecretRef{Name: name, Provider: "oxide", Path: name, Masked: true, Required: true})
	}
	if js.Image != "" {
		work.Environment = &spec.Environment{Type: spec.EnvContainer, Container: &spec.Container{Image: js.Image}}
	}
	return work, refs, nil
}
