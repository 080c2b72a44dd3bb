package api_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

type runResp struct {
	ID           string            `json:"id"`
	PipelineID   string            `json:"pipeline_id"`
	PipelineName string            `json:"pipeline_name"`
	Number       int               `json:"run_number"`
	Status       string            `json:"status"`
	Branch       string            `json:"branch"`
	SHA          string            `json:"sha"`
	Ref          string            `json:"ref"`
	Event        string            `json:"event"`
	Variables    map[string]string `json:"variables"`
	CreatedAt    time.Time         `json:"created_at"`
	Stages       []struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Index  int    `json:"index"`
		Status string `json:"status"`
		Reason string `json:"reason"`
		JobID  string `json:"job_id"`
		Steps  []struct {
			ID       string            `json:"id"`
			Name     string            `json:"name"`
			Key      string            `json:"key"`
			Status   string            `json:"status"`
			ExitCode *int              `json:"exit_code"`
			Outputs  map[string]string `json:"outputs"`
		} `json:"steps"`
	} `json:"stages"`
}

func TestTriggerAndListRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pid := b.createPipeline(t, "web")

	var run runResp
	b.do(t, "POST", "/api/v1/pipelines/web/runs", b.developer,
		map[string]any{"branch": "main", "sha": "abc123", "variables": map[string]string{"K": "V"}}).want(t, 201).json(t, &run)
	if run.ID == "" || run.PipelineID != pid || run.PipelineName != "web" || run.Number != 1 || run.Status != "queued" ||
		run.Branch != "main" || run.SHA != "abc123" || run.Ref != "refs/heads/main" || run.Event != "manual" || run.Variables["K"] != "V" {
		t.Errorf("run = %+v", run)
	}
	if calls := b.control.Calls(); len(calls) != 1 || calls[0] != "TriggerRun "+pid+" main dev" {
		t.Errorf("control calls = %q", calls)
	}
	e := b.wantAudit(t, "dev", "run.trigger", "run", run.ID)
	if !strings.Contains(string(e.Details), pid) {
		t.Errorf("audit details = %s", e.Details)
	}

	// No body is a trigger with the defaults.
	var run2 runResp
	b.do(t, "POST", "/api/v1/pipelines/"+pid+"/runs", b.developer, nil).want(t, 201).json(t, &run2)
	if run2.Number != 2 || run2.Event != "manual" || run2.Variables == nil {
		t.Errorf("run2 = %+v", run2)
	}
	b.do(t, "POST", "/api/v1/pipelines/nope/runs", b.developer, nil).wantError(t, 404, "not_found")
	b.do(t, "POST", "/api/v1/pipelines/web/runs", b.developer, map[string]any{"branch": 5}).wantError(t, 400, "invalid_request")
	b.do(t, "POST", "/api/v1/pipelines/web/runs", b.developer, map[string]any{"brunch": "x"}).wantError(t, 400, "invalid_request")

	b.do(t, "POST", "/api/v1/runs/"+run.ID+"/cancel", b.developer, nil).want(t, 202)

	var page struct {
		Items []runResp
		Next  string
	}
	b.do(t, "GET", "/api/v1/pipelines/web/runs", b.viewer, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 2 || page.Items[0].Number != 2 || page.Items[1].Number != 1 {
		t.Errorf("runs = %+v, want newest first", page.Items)
	}
	b.do(t, "GET", "/api/v1/pipelines/web/runs?status=cancelled", b.viewer, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].ID != run.ID {
		t.Errorf("cancelled runs = %+v", page.Items)
	}
	b.do(t, "GET", "/api/v1/pipelines/web/runs?limit=1", b.viewer, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 1 || page.Next == "" {
		t.Errorf("limit 1: %+v", page)
	}
	next := page.Next
	page.Next = ""
	b.do(t, "GET", "/api/v1/pipelines/web/runs?limit=1&cursor="+next, b.viewer, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].Number != 1 || page.Next != "" {
		t.Errorf("second page: %+v", page)
	}
	b.do(t, "GET", "/api/v1/pipelines/web/runs?status=lost", b.viewer, nil).wantError(t, 400, "invalid_request")
	b.do(t, "GET", "/api/v1/pipelines/nope/runs", b.viewer, nil).wantError(t, 404, "not_found")
}

// seedRun makes a run with two stages, each a job with steps, as the
// scheduler would: build (done, two steps, three log lines) and test
// (running, one line so far).
func seedRun(t *testing.T, b *bundle) (runID string, jobIDs []string) {
	t.Helper()
	ctx := context.Background()
	pid := b.createPipeline(t, fmt.Sprintf("seeded-%d", time.Now().UnixNano()))
	run, err := b.store.Runs().Create(ctx, store.Run{PipelineID: pid, Trigger: []byte(`{"version":1,"trigger":{"event":"push","branch":"dev"}}`), GitSHA: "f00"})
	if err != nil {
		t.Fatal(err)
	}
	stages, err := b.store.Stages().Create(ctx,
		store.Stage{RunID: run.ID, Index: 0, Name: "build"},
		store.Stage{RunID: run.ID, Index: 1, Name: "test (linux)"},
		store.Stage{RunID: run.ID, Index: 2, Name: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	for _, sg := range stages {
		jobs, err := b.store.Jobs().Enqueue(ctx, store.Job{RunID: run.ID, StageID: sg.ID, Name: sg.Name, State: store.JobPending})
		if err != nil {
			t.Fatal(err)
		}
		jobIDs = append(jobIDs, jobs[0].ID)
	}
	steps, err := b.store.Steps().Create(ctx,
		store.Step{JobID: jobIDs[0], Index: 0, Name: "checkout"},
		store.Step{JobID: jobIDs[0], Index: 1, Name: "compile", Key: "cc"},
		store.Step{JobID: jobIDs[1], Index: 0, Name: "unit"})
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	for _, st := range steps[:2] {
		if _, err := b.store.Steps().Update(ctx, st.ID, store.StepUpdate{Status: store.StatusSuccess, ExitCode: &zero, Outputs: map[string]string{"v": "1"}}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if _, err := b.store.Logs().Append(ctx, jobIDs[0], []store.LogLine{
		{Seq: 1, StepID: steps[0].Key, Stream: "system", Text: "b1", Time: now},
		{Seq: 2, StepID: steps[1].Key, Stream: "stdout", Text: "b2", Time: now},
		{Seq: 3, StepID: steps[1].Key, Stream: "stderr", Text: "b3", Time: now},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Logs().Append(ctx, jobIDs[1], []store.LogLine{{Seq: 1, StepID: steps[2].Key, Stream: "stdout", Text: "t1", Time: now}}); err != nil {
		t.Fatal(err)
	}
	for _, set := range []struct {
		i int
		s store.Status
	}{{0, store.StatusRunning}, {0, store.StatusSuccess}, {1, store.StatusRunning}} {
		if _, err := b.store.Stages().SetStatus(ctx, stages[set.i].ID, set.s); err != nil {
			t.Fatal(err)
		}
	}
	return run.ID, jobIDs
}

func TestGetRunTree(t *testing.T) {
	t.Parallel()
	b := setup(t)
	runID, jobs := seedRun(t, b)

	var run runResp
	b.do(t, "GET", "/api/v1/runs/"+runID, b.viewer, nil).want(t, 200).json(t, &run)
	if run.Event != "push" || run.Branch != "dev" || run.SHA != "f00" || !strings.HasPrefix(run.PipelineName, "seeded-") {
		t.Errorf("run = %+v", run)
	}
	if len(run.Stages) != 3 {
		t.Fatalf("%d stages: %+v", len(run.Stages), run.Stages)
	}
	build, test := run.Stages[0], run.Stages[1]
	if build.Name != "build" || build.Status != "success" || build.JobID != jobs[0] || len(build.Steps) != 2 {
		t.Errorf("build = %+v", build)
	}
	if s := build.Steps[1]; s.Name != "compile" || s.Key != "cc" || s.Status != "success" || s.ExitCode == nil || *s.ExitCode != 0 || s.Outputs["v"] != "1" {
		t.Errorf("compile step = %+v", s)
	}
	if test.Name != "test (linux)" || test.Index != 1 || test.Status != "running" || len(test.Steps) != 1 || test.Steps[0].ExitCode != nil {
		t.Errorf("test = %+v", test)
	}
	b.do(t, "GET", "/api/v1/runs/nope", b.viewer, nil).wantError(t, 404, "not_found")
}

type logResp struct {
	Lines []struct {
		Stage, Step, Stream, Text string
		Seq                       int64
		Time                      time.Time
	}
	Next string
}

func (l logResp) texts() string {
	var s []string
	for _, ln := range l.Lines {
		s = append(s, ln.Text)
	}
	return strings.Join(s, ",")
}

func TestRunLogs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	runID, jobs := seedRun(t, b)
	logs := func(after string, limit int) logResp {
		t.Helper()
		q := url.Values{"after": {after}}
		if limit > 0 {
			q.Set("limit", fmt.Sprint(limit))
		}
		var l logResp
		b.do(t, "GET", "/api/v1/runs/"+runID+"/logs?"+q.Encode(), b.viewer, nil).want(t, 200).json(t, &l)
		return l
	}

	// Everything so far: build's lines, then test's first (test is running,
	// so deploy's would wait).
	all := logs("", 0)
	if all.texts() != "b1,b2,b3,t1" {
		t.Fatalf("lines = %s", all.texts())
	}
	if l := all.Lines[1]; l.Stage != "build" || l.Step != "compile" || l.Stream != "stdout" || l.Seq != 2 || l.Time.IsZero() {
		t.Errorf("line = %+v", l)
	}
	// Nothing new: no lines, the same cursor.
	if again := logs(all.Next, 0); len(again.Lines) != 0 || again.Next != all.Next {
		t.Errorf("nothing new = %+v, want no lines and next %q", again, all.Next)
	}

	// Pages of two follow the same order.
	var got []string
	cursor := ""
	for range 10 {
		p := logs(cursor, 2)
		if len(p.Lines) == 0 {
			break
		}
		got = append(got, p.texts())
		cursor = p.Next
	}
	if strings.Join(got, "|") != "b1,b2|b3,t1" {
		t.Errorf("pages = %q", got)
	}

	// New lines of the running stage, then its end, then the next stage's.
	if _, err := b.store.Logs().Append(ctx, jobs[1], []store.LogLine{{Seq: 2, Stream: "stdout", Text: "t2", Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Logs().Append(ctx, jobs[2], []store.LogLine{{Seq: 1, Stream: "stdout", Text: "d1", Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	p := logs(cursor, 0)
	if p.texts() != "t2" {
		t.Errorf("after t1 = %s, want t2 only (deploy waits for test)", p.texts())
	}
	stages, _ := b.store.Stages().List(ctx, runID)
	if _, err := b.store.Stages().SetStatus(ctx, stages[1].ID, store.StatusFailure); err != nil {
		t.Fatal(err)
	}
	if p = logs(p.Next, 0); p.texts() != "d1" || p.Lines[0].Stage != "deploy" {
		t.Errorf("after test ended = %+v", p)
	}

	b.do(t, "GET", "/api/v1/runs/"+runID+"/logs?after=garbage", b.viewer, nil).wantError(t, 400, "invalid_request")
	b.do(t, "GET", "/api/v1/runs/nope/logs", b.viewer, nil).wantError(t, 404, "not_found")

	// A job's own log.
	var jl logResp
	b.do(t, "GET", "/api/v1/jobs/"+jobs[0]+"/logs?limit=2", b.viewer, nil).want(t, 200).json(t, &jl)
	if jl.texts() != "b1,b2" || jl.Lines[0].Step != "checkout" {
		t.Errorf("job log = %+v", jl)
	}
	b.do(t, "GET", "/api/v1/jobs/"+jobs[0]+"/logs?after="+url.QueryEscape(jl.Next), b.viewer, nil).want(t, 200).json(t, &jl)
	if jl.texts() != "b3" {
		t.Errorf("job log page 2 = %s", jl.texts())
	}
	b.do(t, "GET", "/api/v1/jobs/nope/logs", b.viewer, nil).wantError(t, 404, "not_found")
	b.do(t, "GET", "/api/v1/jobs/"+jobs[0]+"/logs?after="+url.QueryEscape(all.Next), b.viewer, nil).wantError(t, 400, "invalid_request")
}

func TestCancelAndApprove(t *testing.T) {
	t.Parallel()
	b := setup(t)
	runID, _ := seedRun(t, b)

	var run runResp
	b.do(t, "POST", "/api/v1/runs/"+runID+"/stages/deploy/approve", b.developer, map[string]string{"comment": "ship it"}).want(t, 200).json(t, &run)
	if run.ID != runID || len(run.Stages) != 3 {
		t.Errorf("approve answered %+v", run)
	}
	b.wantAudit(t, "dev", "run.approve", "run", runID)
	b.do(t, "POST", "/api/v1/runs/"+runID+"/stages/deploy/reject", b.developer, nil).want(t, 200)
	b.wantAudit(t, "dev", "run.reject", "run", runID)
	b.do(t, "POST", "/api/v1/runs/"+runID+"/stages/build/approve", b.developer, nil).wantError(t, 409, "conflict")
	b.do(t, "POST", "/api/v1/runs/nope/stages/deploy/approve", b.developer, nil).wantError(t, 404, "not_found")
	b.do(t, "POST", "/api/v1/runs/"+runID+"/stages/deploy/approve", b.developer, map[string]any{"comment": 1}).wantError(t, 400, "invalid_request")
	calls := b.control.Calls()
	if !slices.Contains(calls, "Approve "+runID+" deploy true dev developer ship it") || !slices.Contains(calls, "Approve "+runID+" deploy false dev developer ") {
		t.Errorf("control calls = %q", calls)
	}

	b.do(t, "POST", "/api/v1/runs/"+runID+"/cancel", b.developer, nil).want(t, 202).json(t, &run)
	if run.Status != "cancelled" {
		t.Errorf("cancelled run = %+v", run)
	}
	b.wantAudit(t, "dev", "run.cancel", "run", runID)
	b.do(t, "POST", "/api/v1/runs/"+runID+"/cancel", b.developer, nil).wantError(t, 409, "conflict")
	b.do(t, "POST", "/api/v1/runs/nope/cancel", b.developer, nil).wantError(t, 404, "not_found")
}
