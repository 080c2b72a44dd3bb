package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
)

type runJSON struct {
	ID           string            `json:"id"`
	PipelineID   string            `json:"pipeline_id"`
	PipelineName string            `json:"pipeline_name"`
	Number       int               `json:"run_number"`
	Status       store.RunStatus   `json:"status"`
	Branch       string            `json:"branch"`
	SHA          string            `json:"sha"`
	Ref          string            `json:"ref"`
	Event        string            `json:"event"`
	Variables    map[string]string `json:"variables"`
	CreatedAt    time.Time         `json:"created_at"`
	StartedAt    *time.Time        `json:"started_at,omitempty"`
	FinishedAt   *time.Time        `json:"finished_at,omitempty"`
	Stages       []stageJSON       `json:"stages,omitempty"`
	Warnings     []string          `json:"warnings,omitempty"` // when triggered
}

type stageJSON struct {
	ID         string       `json:"id"`
	Name       string       `json:"name"`
	Index      int          `json:"index"`
	Status     store.Status `json:"status"`
	Reason     string       `json:"reason,omitempty"`
	JobID      string       `json:"job_id,omitempty"`
	StartedAt  *time.Time   `json:"started_at,omitempty"`
	FinishedAt *time.Time   `json:"finished_at,omitempty"`
	Approval   *gateJSON    `json:"approval,omitempty"`
	Steps      []stepJSON   `json:"steps"`
}

// gateJSON is a stage's approval gate, in the words of the spec's
// ApprovalGate; pending_approvals is how many approvals it still needs.
type gateJSON struct {
	ID                string               `json:"id"`
	Status            store.ApprovalStatus `json:"status"`
	RequiredApprovers int                  `json:"required_approvers"`
	CurrentApprovals  int                  `json:"current_approvals"`
	PendingApprovals  int                  `json:"pending_approvals"`
	AllowedApprovers  []string             `json:"allowed_approvers,omitempty"`
	Approvers         []approverJSON       `json:"approvers"`
	CreatedAt         time.Time            `json:"created_at"`
	ExpiresAt         *time.Time           `json:"expires_at,omitempty"`
}

// approverJSON is one vote: the spec's Approver.
type approverJSON struct {
	UserID  string         `json:"user_id"`
	Action  store.Decision `json:"action"`
	Comment string         `json:"comment,omitempty"`
	ActedAt time.Time      `json:"acted_at"`
}

func toGate(g store.ApprovalGate) *gateJSON {
	out := &gateJSON{
		ID: g.StageID, Status: g.Status, RequiredApprovers: g.Required, CurrentApprovals: g.Approvals(),
		AllowedApprovers: g.Approvers, Approvers: []approverJSON{}, CreatedAt: g.CreatedAt.UTC(), ExpiresAt: utc(g.ExpiresAt),
	}
	if g.Status == store.ApprovalPending {
		out.PendingApprovals = max(g.Required-out.CurrentApprovals, 0)
	}
	for _, v := range g.Votes {
		out.Approvers = append(out.Approvers, approverJSON{UserID: v.User, Action: v.Decision, Comment: v.Comment, ActedAt: v.CreatedAt.UTC()})
	}
	return out
}

type stepJSON struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Key      string            `json:"key,omitempty"`
	Status   store.Status      `json:"status"`
	ExitCode *int              `json:"exit_code,omitempty"`
	Outputs  map[string]string `json:"outputs,omitempty"`
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// toRun converts a run, without its stages.
func toRun(r store.Run, pipelineName string) runJSON {
	t := plan.StoredTrigger(r.Trigger)
	if t.SHA == "" {
		t.SHA = r.GitSHA
	}
	if t.Ref == "" {
		t.Ref = r.GitRef
	}
	if t.Branch == "" {
		t.Branch, _ = strings.CutPrefix(t.Ref, "refs/heads/")
		if t.Branch == t.Ref {
			t.Branch = ""
		}
	}
	if t.Variables == nil {
		t.Variables = map[string]string{}
	}
	return runJSON{
		ID: r.ID, PipelineID: r.PipelineID, PipelineName: pipelineName, Number: r.Number, Status: r.Status,
		Branch: t.Branch, SHA: t.SHA, Ref: t.Ref, Event: t.Event, Variables: t.Variables,
		CreatedAt: r.CreatedAt.UTC(), StartedAt: utc(r.StartedAt), FinishedAt: utc(r.FinishedAt),
	}
}

// runTree converts a run with its stages, their jobs and steps.
func (s *Server) runTree(ctx context.Context, r store.Run) (runJSON, error) {
	name := ""
	if p, err := s.store.Pipelines().Get(ctx, r.PipelineID); err == nil {
		name = p.Name
	}
	out := toRun(r, name)
	stages, err := s.store.Stages().List(ctx, r.ID)
	if err != nil {
		return runJSON{}, err
	}
	jobs, err := s.jobsByStage(ctx, r.ID)
	if err != nil {
		return runJSON{}, err
	}
	gates, err := s.store.Approvals().List(ctx, r.ID)
	if err != nil {
		return runJSON{}, err
	}
	gateOf := make(map[string]store.ApprovalGate, len(gates))
	for _, g := range gates {
		gateOf[g.StageID] = g
	}
	out.Stages = make([]stageJSON, 0, len(stages))
	for _, st := range stages {
		sj := stageJSON{
			ID: st.ID, Name: st.Name, Index: st.Index, Status: st.Status,
			StartedAt: utc(st.StartedAt), FinishedAt: utc(st.FinishedAt), Steps: []stepJSON{},
		}
		if g, ok := gateOf[st.ID]; ok {
			sj.Approval = toGate(g)
		}
		if js := jobs[st.ID]; len(js) > 0 {
			j := js[len(js)-1] // its last attempt
			sj.JobID = j.ID
			if st.Status.Done() && st.Status != store.StatusSuccess {
				sj.Reason = j.Error
			}
			steps, err := s.store.Steps().List(ctx, j.ID)
			if err != nil {
				return runJSON{}, err
			}
			for _, sp := range steps {
				sj.Steps = append(sj.Steps, stepJSON{ID: sp.ID, Name: sp.Name, Key: sp.Key, Status: sp.Status, ExitCode: sp.ExitCode, Outputs: sp.Outputs})
			}
		}
		out.Stages = append(out.Stages, sj)
	}
	return out, nil
}

// jobsByStage returns the jobs of a run by stage ID, oldest first: a
// stage has one job, and one more for each of its retries.
func (s *Server) jobsByStage(ctx context.Context, runID string) (map[string][]store.Job, error) {
	jobs, err := s.store.Jobs().List(ctx, store.JobFilter{RunID: runID})
	if err != nil {
		return nil, err
	}
	m := make(map[string][]store.Job, len(jobs))
	for _, j := range jobs {
		if j.StageID != "" {
			m[j.StageID] = append(m[j.StageID], j)
		}
	}
	return m, nil
}

func (s *Server) writeRun(w http.ResponseWriter, r *http.Request, status int, run store.Run) error {
	out, err := s.runTree(r.Context(), run)
	if err != nil {
		return err
	}
	writeJSON(w, status, out)
	return nil
}

func (s *Server) triggerRun(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Branch    string            `json:"branch"`
		SHA       string            `json:"sha"`
		Ref       string            `json:"ref"`
		Event     string            `json:"event"`
		Variables map[string]string `json:"variables"`
	}
	if err := decodeOptional(r, &req); err != nil {
		return err
	}
	for _, f := range [...]struct{ name, v string }{{"branch", req.Branch}, {"sha", req.SHA}, {"ref", req.Ref}, {"event", req.Event}} {
		if err := checkText(f.name, f.v); err != nil {
			return err
		}
	}
	for name := range req.Variables {
		if err := checkText(fmt.Sprintf("variable %q", name), name); err != nil {
			return err
		}
	}
	if req.Event == "" {
		req.Event = plan.DefaultEvent
	}
	pl, err := findPipeline(r.Context(), s.store, r.PathValue("id"))
	if err != nil {
		return err
	}
	run, err := s.control.TriggerRun(r.Context(), pl.ID, scheduler.TriggerRequest{
		Branch: req.Branch, SHA: req.SHA, Ref: req.Ref, Event: req.Event, Variables: req.Variables, Actor: p.Name,
	})
	if err != nil {
		return err
	}
	out, err := s.runTree(r.Context(), run)
	if err != nil {
		return err
	}
	out.Warnings = s.warnings.get(pl)
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, offset, err := pageParams(r)
	if err != nil {
		return err
	}
	status := store.RunStatus(r.URL.Query().Get("status"))
	if status != "" && !status.Valid() {
		return invalidf("status %q is not one of queued, running, waiting, success, failure, cancelled, timeout", status)
	}
	pl, err := findPipeline(r.Context(), s.store, r.PathValue("id"))
	if err != nil {
		return err
	}
	runs, err := s.store.Runs().List(r.Context(), store.RunFilter{PipelineID: pl.ID, Status: status, Limit: limit + 1, Offset: offset})
	if err != nil {
		return err
	}
	next := ""
	if len(runs) > limit {
		runs, next = runs[:limit], offsetCursor(offset+limit)
	}
	items := mapItems(runs, func(run store.Run) runJSON { return toRun(run, pl.Name) })
	writeJSON(w, http.StatusOK, list[runJSON]{Items: items, Next: next})
	return nil
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request, _ *principal) error {
	run, err := s.store.Runs().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("run %q: %w", r.PathValue("id"), err)
	}
	return s.writeRun(w, r, http.StatusOK, run)
}

func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	run, err := s.control.CancelRun(r.Context(), id, p.Name)
	if err != nil {
		return fmt.Errorf("run %q: %w", id, err)
	}
	return s.writeRun(w, r, http.StatusAccepted, run)
}

func (s *Server) approve(approve bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p *principal) error {
		var req struct {
			Comment string `json:"comment"`
		}
		if err := decodeOptional(r, &req); err != nil {
			return err
		}
		id, stage := r.PathValue("id"), r.PathValue("stage")
		v := scheduler.Vote{Approve: approve, Actor: p.Name, Role: string(p.Role), Comment: req.Comment}
		run, err := s.control.Approve(r.Context(), id, stage, v)
		if err != nil {
			return fmt.Errorf("run %q: %w", id, err)
		}
		return s.writeRun(w, r, http.StatusOK, run)
	}
}

// logLineJSON is a LogLine of docs/api.md.
type logLineJSON struct {
	Stage   string    `json:"stage,omitempty"`
	Step    string    `json:"step,omitempty"`
	Stream  string    `json:"stream"`
	Seq     int64     `json:"seq"`
	Attempt int       `json:"attempt"`
	Text    string    `json:"text"`
	Time    time.Time `json:"time"`
}

type logPage struct {
	Lines []logLineJSON `json:"lines"`
	Next  string        `json:"next"`
}

// stepNames maps a job's step IDs to their names.
func (s *Server) stepNames(ctx context.Context, jobID string) (map[string]string, error) {
	steps, err := s.store.Steps().List(ctx, jobID)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(steps))
	for _, st := range steps {
		m[st.Key] = st.Name // log lines name their step by its key
	}
	return m, nil
}

func logLimit(r *http.Request) (int, error) {
	n, err := limitParam(r)
	if err != nil {
		return 0, err
	}
	if r.URL.Query().Get("limit") == "" {
		n = maxLimit // logs come in big pages unless asked otherwise
	}
	return n, nil
}

// runLogCursor is a position in a run's log: after line seq of the stage
// with index stage.
// runLogCursor is a place in a run's log: a stage, one of its jobs (0 for
// its first attempt) and a line of that job.
type runLogCursor struct {
	stage, job int
	seq        int64
}

func (c runLogCursor) String() string {
	return encodeCursor("l", fmt.Sprintf("%d.%d.%d", c.stage, c.job, c.seq))
}

func parseRunLogCursor(s string) (runLogCursor, error) {
	if s == "" {
		return runLogCursor{stage: -1}, nil
	}
	v, ok := decodeCursor(s, "l")
	var c runLogCursor
	if n, err := fmt.Sscanf(v, "%d.%d.%d", &c.stage, &c.job, &c.seq); !ok || err != nil || n != 3 || c.job < 0 || c.seq < 0 {
		return runLogCursor{}, invalidf("after %q is not a cursor of this run's log", s)
	}
	return c, nil
}

// runLogs answers the lines of a run after the cursor: stage by stage in
// index order, each stage's lines by sequence. It moves on to the next
// stage only once a stage is done and its lines are read, so a following
// client sees every line once, in that order.
func (s *Server) runLogs(w http.ResponseWriter, r *http.Request, _ *principal) error {
	ctx := r.Context()
	limit, err := logLimit(r)
	if err != nil {
		return err
	}
	cur, err := parseRunLogCursor(r.URL.Query().Get("after"))
	if err != nil {
		return err
	}
	runID := r.PathValue("id")
	if _, err := s.store.Runs().Get(ctx, runID); err != nil {
		return fmt.Errorf("run %q: %w", runID, err)
	}
	stages, err := s.store.Stages().List(ctx, runID)
	if err != nil {
		return err
	}
	jobs, err := s.jobsByStage(ctx, runID)
	if err != nil {
		return err
	}
	lines := []logLineJSON{}
stages:
	for _, st := range stages {
		if st.Index < cur.stage {
			continue
		}
		if st.Index > cur.stage {
			cur = runLogCursor{stage: st.Index}
		}
		js := jobs[st.ID]
		if len(js) == 0 {
			if st.Status.Done() {
				continue
			}
			break
		}
		// Read the stage's status before its lines: a stage seen done has
		// all its lines stored, and so has every job but its last.
		done := st.Status.Done()
		for ; cur.job < len(js); cur.job, cur.seq = cur.job+1, 0 {
			j := js[cur.job]
			got, err := s.store.Logs().Read(ctx, j.ID, cur.seq, limit-len(lines))
			if err != nil {
				return err
			}
			if len(got) > 0 {
				names, err := s.stepNames(ctx, j.ID)
				if err != nil {
					return err
				}
				for _, l := range got {
					lines = append(lines, logLineJSON{Stage: st.Name, Step: names[l.StepID], Stream: l.Stream, Seq: l.Seq, Attempt: l.Attempt, Text: l.Text, Time: l.Time.UTC()})
				}
				cur.seq = got[len(got)-1].Seq
			}
			if len(lines) >= limit || cur.job == len(js)-1 && !done {
				break stages
			}
		}
	}
	if cur.stage < 0 {
		cur.stage = 0
	}
	writeJSON(w, http.StatusOK, logPage{Lines: lines, Next: cur.String()})
	return nil
}
