package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/store"
)

type jobJSON struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	State       store.JobState  `json:"state"`
	RunID       string          `json:"run_id,omitempty"`
	StageID     string          `json:"stage_id,omitempty"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	Priority    int             `json:"priority"`
	Labels      []string        `json:"labels"`
	WorkerID    string          `json:"worker_id,omitempty"`
	ExitCode    *int            `json:"exit_code,omitempty"`
	Error       string          `json:"error,omitempty"`
	Spec        json.RawMessage `json:"spec,omitempty"`
	// WaitingReason, of a queued job, says why no connected agent could
	// ever take it.
	WaitingReason string     `json:"waiting_reason,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	StartedAt     *time.Time `json:"started_at,omitempty"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
}

func toJob(j store.Job) jobJSON {
	out := jobJSON{
		ID: j.ID, Name: j.Name, State: j.State, RunID: j.RunID, StageID: j.StageID,
		Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Priority: j.Priority, Labels: j.Labels,
		WorkerID: j.WorkerID, ExitCode: j.ExitCode, Error: j.Error,
		CreatedAt: j.CreatedAt.UTC(), StartedAt: utc(j.StartedAt), FinishedAt: utc(j.FinishedAt),
	}
	if out.Labels == nil {
		out.Labels = []string{}
	}
	// A submitted job's spec is a JobSpec; a run's job holds the
	// scheduler's own description of a stage, which is not the API's.
	if j.RunID == "" && json.Valid(j.Spec) {
		out.Spec = j.Spec
	}
	return out
}

// readSpec reads a JobSpec body strictly and validates it.
func readSpec(r *http.Request) (jobspec.Spec, error) {
	b, err := readBody(r)
	if err != nil {
		return jobspec.Spec{}, err
	}
	if len(b) == 0 {
		return jobspec.Spec{}, invalidf("the request needs a JSON body")
	}
	spec, err := jobspec.Decode(b)
	if err != nil {
		return jobspec.Spec{}, err
	}
	if err := spec.Validate(); err != nil {
		return jobspec.Spec{}, err
	}
	if err := checkText("job name", spec.Name); err != nil {
		return jobspec.Spec{}, err
	}
	return spec, nil
}

func (s *Server) submitJob(w http.ResponseWriter, r *http.Request, p *principal) error {
	spec, err := readSpec(r)
	if err != nil {
		return err
	}
	job, err := s.control.SubmitJob(r.Context(), spec, p.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toJob(job))
	return nil
}

// maxBatch bounds the jobs of one POST /jobs:batch.
const maxBatch = 1000

// submitJobs queues {"jobs": [spec, …]}, all or none: every problem of
// every spec is reported at once, each as jobs[i]: problem.
func (s *Server) submitJobs(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Jobs []json.RawMessage `json:"jobs"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Jobs) == 0 || len(req.Jobs) > maxBatch {
		return invalidf("jobs: want 1 to %d job specs, got %d", maxBatch, len(req.Jobs))
	}
	specs := make([]jobspec.Spec, len(req.Jobs))
	var problems []string
	for i, raw := range req.Jobs {
		spec, err := jobspec.Decode(raw)
		if err == nil {
			err = spec.Validate()
		}
		if err == nil {
			err = checkText("job name", spec.Name)
		}
		var verr *jobspec.ValidationError
		switch {
		case errors.As(err, &verr):
			for _, pr := range verr.Problems {
				problems = append(problems, fmt.Sprintf("jobs[%d]: %s", i, pr))
			}
		case err != nil:
			problems = append(problems, fmt.Sprintf("jobs[%d]: %v", i, err))
		}
		specs[i] = spec
	}
	if len(problems) > 0 {
		return &jobspec.ValidationError{Problems: problems}
	}
	jobs, err := s.control.SubmitJobs(r.Context(), specs, p.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, list[jobJSON]{Items: mapItems(jobs, toJob)})
	return nil
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, offset, err := pageParams(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	state := store.JobState(q.Get("state"))
	if state != "" && !state.Valid() {
		return invalidf("state %q is not one of pending, queued, assigned, running, succeeded, failed, cancelled, timeout", state)
	}
	jobs, err := s.store.Jobs().List(r.Context(), store.JobFilter{RunID: q.Get("run_id"), State: state, Limit: limit + 1, Offset: offset})
	if err != nil {
		return err
	}
	next := ""
	if len(jobs) > limit {
		jobs, next = jobs[:limit], offsetCursor(offset+limit)
	}
	writeJSON(w, http.StatusOK, list[jobJSON]{Items: mapItems(jobs, toJob), Next: next})
	return nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request, _ *principal) error {
	j, err := s.store.Jobs().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("job %q: %w", r.PathValue("id"), err)
	}
	out := toJob(j)
	if out.WaitingReason, err = s.control.WaitingReason(r.Context(), j); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	j, err := s.control.CancelJob(r.Context(), id, p.Name)
	if err != nil {
		return fmt.Errorf("job %q: %w", id, err)
	}
	writeJSON(w, http.StatusAccepted, toJob(j))
	return nil
}

// jobLogs answers a job's lines after the cursor, by sequence.
func (s *Server) jobLogs(w http.ResponseWriter, r *http.Request, _ *principal) error {
	ctx := r.Context()
	limit, err := logLimit(r)
	if err != nil {
		return err
	}
	var after int64
	if c := r.URL.Query().Get("after"); c != "" {
		v, ok := decodeCursor(c, "j")
		if ok {
			after, err = strconv.ParseInt(v, 10, 64)
		}
		if !ok || err != nil || after < 0 {
			return invalidf("after %q is not a cursor of this job's log", c)
		}
	}
	id := r.PathValue("id")
	if _, err := s.store.Jobs().Get(ctx, id); err != nil {
		return fmt.Errorf("job %q: %w", id, err)
	}
	got, err := s.store.Logs().Read(ctx, id, after, limit)
	if err != nil {
		return err
	}
	lines := make([]logLineJSON, 0, len(got))
	if len(got) > 0 {
		names, err := s.stepNames(ctx, id)
		if err != nil {
			return err
		}
		for _, l := range got {
			lines = append(lines, logLineJSON{Step: names[l.StepID], Stream: l.Stream, Seq: l.Seq, Attempt: l.Attempt, Text: l.Text, Time: l.Time.UTC()})
		}
		after = got[len(got)-1].Seq
	}
	writeJSON(w, http.StatusOK, logPage{Lines: lines, Next: encodeCursor("j", strconv.FormatInt(after, 10))})
	return nil
}
