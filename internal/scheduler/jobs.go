package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/store"
)

// SubmitJob queues a job submitted directly (not part of a run), with its
// steps. The store keeps the spec as given; it becomes the runner's job
// when claimed.
func (s *Service) SubmitJob(ctx context.Context, spec jobspec.Spec, actor string) (store.Job, error) {
	if err := spec.Validate(); err != nil {
		return store.Job{}, err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return store.Job{}, err
	}
	var job store.Job
	err = s.store.InTx(ctx, func(tx store.Tx) error {
		jobs, err := tx.Jobs().Enqueue(ctx, store.Job{
			Name: spec.Name, Spec: b, Labels: spec.Labels, Priority: spec.Priority, MaxAttempts: spec.MaxAttempts,
		})
		if err != nil {
			return err
		}
		job = jobs[0]
		ws, err := submittedWork(job)
		if err != nil {
			return err
		}
		steps := make([]store.Step, len(ws.Job.Steps))
		for i, st := range ws.Job.Steps {
			steps[i] = store.Step{JobID: job.ID, Index: i, Name: st.Name, Key: st.ID}
		}
		_, err = tx.Steps().Create(ctx, steps...)
		return err
	})
	if err != nil {
		return store.Job{}, err
	}
	s.wake()
	return job, nil
}

// CancelJob cancels a job that is not done and tells its worker. A job of a
// run ends its stage as cancelled, and the run goes on as after a failure.
func (s *Service) CancelJob(ctx context.Context, id, actor string) (store.Job, error) {
	j, err := s.store.Jobs().Get(ctx, id)
	if err != nil {
		return store.Job{}, err
	}
	err = s.inRun(ctx, j.RunID, func(tx store.Tx) (err error) {
		if j, err = tx.Jobs().Cancel(ctx, id, "cancelled by "+actor); err != nil || j.RunID == "" {
			return err
		}
		if _, err := tx.Stages().SetStatus(ctx, j.StageID, store.StatusCancelled); ignoreConflict(err) != nil {
			return err
		}
		return s.advance(ctx, tx, j.RunID)
	})
	if err != nil {
		return store.Job{}, err
	}
	s.notifyCancel(j.ID, j.Error)
	return j, nil
}

// DrainAgent marks an agent draining: it finishes its jobs and takes no
// new ones.
func (s *Service) DrainAgent(ctx context.Context, id, actor string) (store.Agent, error) {
	return s.store.Agents().SetStatus(ctx, id, store.AgentDraining)
}

// submittedWork turns the spec of a job submitted directly into the
// runner's job: its command or steps, environment variables, secrets by
// name (organization scope) and timeout.
func submittedWork(j store.Job) (workSpec, error) {
	spec, err := jobspec.Decode(j.Spec)
	if err != nil {
		return workSpec{}, fmt.Errorf("job %s: spec: %w", j.ID, err)
	}
	ws := workSpec{Job: runner.Job{Stage: spec.Name, Timeout: spec.TimeoutDuration(), Values: map[string]any{}}}
	if spec.Command != "" {
		ws.Job.Steps = append(ws.Job.Steps, &pipeline.Step{Name: spec.Name, ID: "command", Run: spec.Command, Shell: spec.Shell, ContinueOnError: "false"})
	}
	for i, st := range spec.Steps {
		shell := st.Shell
		if shell == "" {
			shell = spec.Shell
		}
		ws.Job.Steps = append(ws.Job.Steps, &pipeline.Step{Name: st.Name, ID: fmt.Sprintf("step-%d", i+1), Run: st.Run, Shell: shell, ContinueOnError: "false"})
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		ws.Job.Variables = append(ws.Job.Variables, pipeline.Var{Name: k, Value: spec.Env[k]})
	}
	for _, name := range spec.Secrets {
		ws.Secrets = append(ws.Secrets, secretRef{SecretRef: pipeline.SecretRef{Name: name, Provider: "oxide", Path: name, Masked: true, Required: true}})
	}
	if spec.Image != "" {
		ws.Environment = &pipeline.Environment{Type: pipeline.EnvContainer, Container: &pipeline.Container{Image: spec.Image}}
	}
	return ws, nil
}
