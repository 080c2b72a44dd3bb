package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/oxide-ci/oxide/internal/testkit"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/oxide-ci/oxide/sdk"
)

// The servers in these tests are test doubles of the real API server
// (internal/server/api): each implements, from docs/api.md, only what its
// test exercises. The real server is tested against the SDK end to end
// elsewhere.

const token = "oxt_test"

// request is what a recorder saw of one request.
type request struct {
	Method, Path, Query, Auth, ContentType string
	Body                                   string
}

// recorder is a server that records each request and answers every one with
// status and body.
type recorder struct {
	mu     sync.Mutex
	reqs   []request
	status int
	body   string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.reqs = append(r.reqs, request{req.Method, req.URL.EscapedPath(), req.URL.RawQuery, req.Header.Get("Authorization"), req.Header.Get("Content-Type"), string(b)})
	status, body := r.status, r.body
	r.mu.Unlock()
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func (r *recorder) last(t *testing.T) request {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("no request was sent")
	}
	return r.reqs[len(r.reqs)-1]
}

// setup starts h and returns a client of it.
func setup(t *testing.T, h http.Handler) *sdk.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return sdk.New(srv.URL, token, sdk.WithHTTPClient(srv.Client()))
}

// jsonEqual reports whether two JSON texts hold the same value.
func jsonEqual(t *testing.T, got, want string) bool {
	t.Helper()
	if got == "" || want == "" {
		return got == want
	}
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("body %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

const (
	t0       = "2026-03-01T10:00:00Z"
	runJSON  = `{"id":"r1","pipeline_id":"p1","pipeline_name":"build","run_number":3,"status":"queued","branch":"main","sha":"abc","ref":"refs/heads/main","event":"api","variables":{"K":"V"},"created_at":"` + t0 + `"}`
	pipeJSON = `{"id":"p1","name":"build","repository":"git@x:y.git","definition":"version: \"1\"\n","created_at":"` + t0 + `","updated_at":"` + t0 + `"}`
	jobJSON  = `{"id":"j1","name":"hello","state":"queued","attempt":0,"max_attempts":3,"priority":5,"labels":["linux"],"spec":{"name":"hello","command":"echo hi","labels":["linux"],"priority":5},"created_at":"` + t0 + `"}`
)

// TestRequestShapes checks the method, path, query, headers and body of each
// call, and that the answer decodes.
func TestRequestShapes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name                string
		status              int
		answer              string
		call                func(c *sdk.Client) (any, error)
		method, path, query string
		body                string
		want                any // the decoded answer, when checked
	}{
		{
			name: "create pipeline", status: 201, answer: pipeJSON,
			call: func(c *sdk.Client) (any, error) {
				return c.CreatePipeline(ctx, sdk.CreatePipelineRequest{Name: "build", Definition: "version: \"1\"\n", Repository: "git@x:y.git"})
			},
			method: "POST", path: "/api/v1/pipelines",
			body: `{"name":"build","definition":"version: \"1\"\n","repository":"git@x:y.git"}`,
			want: sdk.Pipeline{ID: "p1", Name: "build", Repository: "git@x:y.git", Definition: "version: \"1\"\n", CreatedAt: mustTime(t0), UpdatedAt: mustTime(t0)},
		},
		{
			name: "get pipeline by name escapes it", status: 200, answer: pipeJSON,
			call:   func(c *sdk.Client) (any, error) { return c.GetPipeline(ctx, "my app/x") },
			method: "GET", path: "/api/v1/pipelines/my%20app%2Fx",
		},
		{
			name: "update pipeline sends only what is set", status: 200, answer: pipeJSON,
			call: func(c *sdk.Client) (any, error) {
				def := "name: b\n"
				return c.UpdatePipeline(ctx, "p1", sdk.UpdatePipelineRequest{Definition: &def})
			},
			method: "PUT", path: "/api/v1/pipelines/p1", body: `{"definition":"name: b\n"}`,
		},
		{
			name: "delete pipeline", status: 204,
			call:   func(c *sdk.Client) (any, error) { return nil, c.DeletePipeline(ctx, "p1") },
			method: "DELETE", path: "/api/v1/pipelines/p1",
		},
		{
			name: "trigger run", status: 201, answer: runJSON,
			call: func(c *sdk.Client) (any, error) {
				return c.TriggerRun(ctx, "build", sdk.TriggerRequest{Branch: "main", SHA: "abc", Variables: map[string]string{"K": "V"}})
			},
			method: "POST", path: "/api/v1/pipelines/build/runs", body: `{"branch":"main","sha":"abc","variables":{"K":"V"}}`,
			want: sdk.Run{ID: "r1", PipelineID: "p1", PipelineName: "build", Number: 3, Status: sdk.RunQueued, Branch: "main", SHA: "abc", Ref: "refs/heads/main", Event: "api", Variables: map[string]string{"K": "V"}, CreatedAt: mustTime(t0)},
		},
		{
			name: "list runs by status", status: 200, answer: `{"items":[` + runJSON + `],"next":"c2"}`,
			call: func(c *sdk.Client) (any, error) {
				return c.ListRuns(ctx, "p1", sdk.ListRunsOptions{Status: sdk.RunFailure, ListOptions: sdk.ListOptions{Limit: 10}})
			},
			method: "GET", path: "/api/v1/pipelines/p1/runs", query: "limit=10&status=failure",
		},
		{
			name: "get run decodes the stage tree", status: 200,
			answer: `{"id":"r1","run_number":1,"status":"failure","created_at":"` + t0 + `","started_at":"` + t0 + `","finished_at":null,
				"stages":[{"id":"s1","name":"test (linux)","index":1,"status":"failure","reason":"step failed","job_id":"j1",
				"steps":[{"id":"st1","name":"build","key":"build","status":"failure","exit_code":2,"outputs":{"a":"b"}}]}]}`,
			call:   func(c *sdk.Client) (any, error) { return c.GetRun(ctx, "r1") },
			method: "GET", path: "/api/v1/runs/r1",
			want: sdk.Run{ID: "r1", Number: 1, Status: sdk.RunFailure, CreatedAt: mustTime(t0), StartedAt: ptr(mustTime(t0)),
				Stages: []sdk.Stage{{ID: "s1", Name: "test (linux)", Index: 1, Status: sdk.StatusFailure, Reason: "step failed", JobID: "j1",
					Steps: []sdk.Step{{ID: "st1", Name: "build", Key: "build", Status: sdk.StatusFailure, ExitCode: ptr(2), Outputs: map[string]string{"a": "b"}}}}}},
		},
		{
			name: "cancel run", status: 202, answer: runJSON,
			call:   func(c *sdk.Client) (any, error) { return c.CancelRun(ctx, "r1") },
			method: "POST", path: "/api/v1/runs/r1/cancel",
		},
		{
			name: "logs", status: 200, answer: `{"lines":[{"stage":"build","step":"compile","stream":"stdout","seq":12,"text":"ok","time":"` + t0 + `"}],"next":"n1"}`,
			call:   func(c *sdk.Client) (any, error) { return c.Logs(ctx, "r1", "n0", 100) },
			method: "GET", path: "/api/v1/runs/r1/logs", query: "after=n0&limit=100",
			want: sdk.LogPage{Lines: []sdk.LogLine{{Stage: "build", Step: "compile", Stream: "stdout", Seq: 12, Text: "ok", Time: mustTime(t0)}}, Next: "n1"},
		},
		{
			name: "approve", status: 200, answer: runJSON,
			call:   func(c *sdk.Client) (any, error) { return c.Approve(ctx, "r1", "deploy prod", "lgtm") },
			method: "POST", path: "/api/v1/runs/r1/stages/deploy%20prod/approve", body: `{"comment":"lgtm"}`,
		},
		{
			name: "reject without comment", status: 200, answer: runJSON,
			call:   func(c *sdk.Client) (any, error) { return c.Reject(ctx, "r1", "deploy", "") },
			method: "POST", path: "/api/v1/runs/r1/stages/deploy/reject", body: `{}`,
		},
		{
			name: "submit job", status: 201, answer: jobJSON,
			call: func(c *sdk.Client) (any, error) {
				return c.SubmitJob(ctx, sdk.JobSpec{Name: "hello", Command: "echo hi", Labels: []string{"linux"}, Priority: 5, Timeout: "10m",
					Resources: &sdk.Resources{CPU: "2", Memory: "1Gi"}})
			},
			method: "POST", path: "/api/v1/jobs",
			body: `{"name":"hello","command":"echo hi","labels":["linux"],"priority":5,"timeout":"10m","resources":{"cpu":"2","memory":"1Gi"}}`,
			want: sdk.Job{ID: "j1", Name: "hello", State: sdk.JobQueued, MaxAttempts: 3, Priority: 5, Labels: []string{"linux"},
				Spec: sdk.JobSpec{Name: "hello", Command: "echo hi", Labels: []string{"linux"}, Priority: 5}, CreatedAt: mustTime(t0)},
		},
		{
			name: "list jobs", status: 200, answer: `{"items":[]}`,
			call: func(c *sdk.Client) (any, error) {
				return c.ListJobs(ctx, sdk.ListJobsOptions{State: sdk.JobRunning, RunID: "r1"})
			},
			method: "GET", path: "/api/v1/jobs", query: "run_id=r1&state=running",
		},
		{
			name: "cancel job", status: 202, answer: jobJSON,
			call:   func(c *sdk.Client) (any, error) { return c.CancelJob(ctx, "j1") },
			method: "POST", path: "/api/v1/jobs/j1/cancel",
		},
		{
			name: "job logs", status: 200, answer: `{"lines":[],"next":"x"}`,
			call:   func(c *sdk.Client) (any, error) { return c.JobLogs(ctx, "j1", "", 0) },
			method: "GET", path: "/api/v1/jobs/j1/logs",
		},
		{
			name: "create template", status: 201,
			answer: `{"id":"t1","name":"greet","parameters":[{"name":"who","type":"string","required":true}],"spec":{"name":"greet","command":"echo {{ .who }}"},"created_at":"` + t0 + `","updated_at":"` + t0 + `"}`,
			call: func(c *sdk.Client) (any, error) {
				return c.CreateTemplate(ctx, sdk.TemplateRequest{Name: "greet",
					Parameters: []sdk.Parameter{{Name: "who", Type: sdk.ParamString, Required: true}, {Name: "n", Type: sdk.ParamInt, Default: 1}, {Name: "env", Type: sdk.ParamEnum, Values: []any{"dev", "prod"}}},
					Spec:       sdk.JobSpec{Name: "greet", Command: "echo {{ .who }}"}})
			},
			method: "POST", path: "/api/v1/templates",
			body: `{"name":"greet","parameters":[{"name":"who","type":"string","required":true},{"name":"n","type":"int","default":1},{"name":"env","type":"enum","values":["dev","prod"]}],"spec":{"name":"greet","command":"echo {{ .who }}"}}`,
			want: sdk.Template{ID: "t1", Name: "greet", Parameters: []sdk.Parameter{{Name: "who", Type: "string", Required: true}},
				Spec: sdk.JobSpec{Name: "greet", Command: "echo {{ .who }}"}, CreatedAt: mustTime(t0), UpdatedAt: mustTime(t0)},
		},
		{
			name: "instantiate template", status: 201, answer: jobJSON,
			call: func(c *sdk.Client) (any, error) {
				return c.InstantiateTemplate(ctx, "greet", map[string]any{"who": "world", "n": 2, "loud": true})
			},
			method: "POST", path: "/api/v1/templates/greet/instantiate", body: `{"parameters":{"who":"world","n":2,"loud":true}}`,
		},
		{
			name: "delete template", status: 204,
			call:   func(c *sdk.Client) (any, error) { return nil, c.DeleteTemplate(ctx, "greet") },
			method: "DELETE", path: "/api/v1/templates/greet",
		},
		{
			name: "drain agent", status: 200, answer: `{"id":"a1","name":"box","status":"draining","capacity":2,"registered_at":"` + t0 + `"}`,
			call:   func(c *sdk.Client) (any, error) { return c.DrainAgent(ctx, "a1") },
			method: "POST", path: "/api/v1/agents/a1/drain",
			want: sdk.Agent{ID: "a1", Name: "box", Status: sdk.AgentDraining, Capacity: 2, RegisteredAt: mustTime(t0)},
		},
		{
			name: "list workers", status: 200,
			answer: `{"items":[{"id":"w1","provider":"docker","state":"ready","agent_id":"a1","handle":"c0ffee","deadline":"` + t0 + `","created_at":"` + t0 + `","updated_at":"` + t0 + `"}]}`,
			call: func(c *sdk.Client) (any, error) {
				return c.ListWorkers(ctx, sdk.ListWorkersOptions{States: []sdk.WorkerState{sdk.WorkerReady, sdk.WorkerFailed}, Provider: "docker"})
			},
			method: "GET", path: "/api/v1/workers", query: "provider=docker&state=ready&state=failed",
			want: sdk.Page[sdk.Worker]{Items: []sdk.Worker{{ID: "w1", Provider: "docker", State: sdk.WorkerReady, AgentID: "a1", Handle: "c0ffee",
				Deadline: mustTime(t0), CreatedAt: mustTime(t0), UpdatedAt: mustTime(t0)}}},
		},
		{
			name: "providers", status: 200,
			answer: `{"items":[{"name":"docker","healthy":true,"capacity":{"cpus":8,"memory_bytes":1024,"workers":2},"workers":{"ready":2,"failed":0}},
				{"name":"k8s","healthy":false,"error":"down","capacity_error":"down","workers":{}}]}`,
			call:   func(c *sdk.Client) (any, error) { return c.Providers(ctx) },
			method: "GET", path: "/api/v1/providers",
			want: []sdk.Provider{
				{Name: "docker", Healthy: true, Capacity: &sdk.Capacity{CPUs: 8, MemoryBytes: 1024, Workers: 2}, Workers: map[sdk.WorkerState]int{sdk.WorkerReady: 2, sdk.WorkerFailed: 0}},
				{Name: "k8s", Error: "down", CapacityError: "down", Workers: map[sdk.WorkerState]int{}},
			},
		},
		{
			name: "set secret", status: 200, answer: `{"name":"TOKEN","scope":"pipeline","scope_id":"p1","created_at":"` + t0 + `","updated_at":"` + t0 + `"}`,
			call: func(c *sdk.Client) (any, error) {
				return c.SetSecret(ctx, "TOKEN", "s3cret", sdk.SecretScope{Scope: sdk.ScopePipeline, ScopeID: "p1"})
			},
			method: "PUT", path: "/api/v1/secrets/TOKEN", body: `{"value":"s3cret","scope":"pipeline","scope_id":"p1"}`,
		},
		{
			name: "set secret with an empty answer", status: 200,
			call:   func(c *sdk.Client) (any, error) { return c.SetSecret(ctx, "TOKEN", "v", sdk.SecretScope{}) },
			method: "PUT", path: "/api/v1/secrets/TOKEN", body: `{"value":"v"}`,
		},
		{
			name: "list secrets", status: 200, answer: `{"items":[]}`,
			call: func(c *sdk.Client) (any, error) {
				return c.ListSecrets(ctx, sdk.ListSecretsOptions{SecretScope: sdk.SecretScope{Scope: "pipeline", ScopeID: "p1"}})
			},
			method: "GET", path: "/api/v1/secrets", query: "scope=pipeline&scope_id=p1",
		},
		{
			name: "delete secret", status: 204,
			call: func(c *sdk.Client) (any, error) {
				return nil, c.DeleteSecret(ctx, "TOKEN", sdk.SecretScope{Scope: "organization"})
			},
			method: "DELETE", path: "/api/v1/secrets/TOKEN", query: "scope=organization",
		},
		{
			name: "create token", status: 201, answer: `{"id":"k1","name":"ci-bot","role":"developer","token":"oxt_abc"}`,
			call:   func(c *sdk.Client) (any, error) { return c.CreateToken(ctx, "ci-bot", sdk.RoleDeveloper) },
			method: "POST", path: "/api/v1/tokens", body: `{"name":"ci-bot","role":"developer"}`,
			want: sdk.Token{ID: "k1", Name: "ci-bot", Role: "developer", Secret: "oxt_abc"},
		},
		{
			name: "audit accepts numeric ids", status: 200,
			answer: `{"items":[{"id":7,"time":"` + t0 + `","actor":"ci-bot","action":"run.trigger","resource_type":"run","resource_id":"r1"}],"next":"6"}`,
			call: func(c *sdk.Client) (any, error) {
				return c.ListAudit(ctx, sdk.ListAuditOptions{Actor: "ci-bot", ListOptions: sdk.ListOptions{Cursor: "9"}})
			},
			method: "GET", path: "/api/v1/audit", query: "actor=ci-bot&cursor=9",
			want: sdk.Page[sdk.AuditEntry]{Items: []sdk.AuditEntry{{ID: "7", Time: mustTime(t0), Actor: "ci-bot", Action: "run.trigger", ResourceType: "run", ResourceID: "r1"}}, Next: "6"},
		},
		{
			name: "health", status: 200, answer: `{"status":"ok"}`,
			call:   func(c *sdk.Client) (any, error) { return c.Health(ctx) },
			method: "GET", path: "/api/v1/health",
			want: sdk.Health{Status: "ok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{status: tt.status, body: tt.answer}
			c := setup(t, rec)
			got, err := tt.call(c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			r := rec.last(t)
			if r.Method != tt.method || r.Path != tt.path || r.Query != tt.query {
				t.Errorf("request %s %s?%s, want %s %s?%s", r.Method, r.Path, r.Query, tt.method, tt.path, tt.query)
			}
			if r.Auth != "Bearer "+token {
				t.Errorf("Authorization %q", r.Auth)
			}
			if !jsonEqual(t, r.Body, tt.body) {
				t.Errorf("body\n got %s\nwant %s", r.Body, tt.body)
			}
			if tt.body != "" && r.ContentType != "application/json" {
				t.Errorf("Content-Type %q", r.ContentType)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("answer\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestNewBaseURL(t *testing.T) {
	t.Parallel()
	rec := &recorder{status: 200, body: `{"status":"ok"}`}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	for _, base := range []string{srv.URL, srv.URL + "/", srv.URL + "/api/v1", srv.URL + "/api/v1/"} {
		if _, err := sdk.New(base, "").Health(context.Background()); err != nil {
			t.Fatalf("%s: %v", base, err)
		}
		if r := rec.last(t); r.Path != "/api/v1/health" || r.Auth != "" {
			t.Errorf("New(%q): GET %s with Authorization %q", base, r.Path, r.Auth)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		body     string
		sentinel error
		want     sdk.Error
	}{
		{
			name: "invalid pipeline", status: 400,
			body:     `{"error":{"code":"invalid_pipeline","message":"pipeline definition is invalid","details":["pipeline.yaml:3:5: unknown key \"stagse\"","pipeline.yaml:9:1: x"]}}`,
			sentinel: sdk.ErrInvalid,
			want:     sdk.Error{Status: 400, Code: "invalid_pipeline", Message: "pipeline definition is invalid", Details: []string{`pipeline.yaml:3:5: unknown key "stagse"`, "pipeline.yaml:9:1: x"}},
		},
		{
			name: "unauthorized", status: 401, body: `{"error":{"code":"unauthorized","message":"missing or unknown token"}}`,
			sentinel: sdk.ErrUnauthorized,
			want:     sdk.Error{Status: 401, Code: "unauthorized", Message: "missing or unknown token"},
		},
		{
			name: "forbidden", status: 403, body: `{"error":{"code":"forbidden","message":"viewer may not"}}`,
			sentinel: sdk.ErrForbidden,
			want:     sdk.Error{Status: 403, Code: "forbidden", Message: "viewer may not"},
		},
		{
			name: "not found", status: 404, body: `{"error":{"code":"not_found","message":"no pipeline \"x\""}}`,
			sentinel: sdk.ErrNotFound,
			want:     sdk.Error{Status: 404, Code: "not_found", Message: `no pipeline "x"`},
		},
		{
			name: "conflict", status: 409, body: `{"error":{"code":"conflict","message":"name taken"}}`,
			sentinel: sdk.ErrConflict,
			want:     sdk.Error{Status: 409, Code: "conflict", Message: "name taken"},
		},
		{
			name: "not the envelope", status: 502, body: "<html>Bad Gateway</html>",
			want: sdk.Error{Status: 502, Message: "<html>Bad Gateway</html>"},
		},
		{
			name: "no body", status: 500,
			want: sdk.Error{Status: 500, Message: "Internal Server Error"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := setup(t, &recorder{status: tt.status, body: tt.body})
			_, err := c.CreatePipeline(context.Background(), sdk.CreatePipelineRequest{Name: "x"})
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *sdk.Error", err, err)
			}
			if !reflect.DeepEqual(*e, tt.want) {
				t.Errorf("got %#v\nwant %#v", *e, tt.want)
			}
			for _, s := range []error{sdk.ErrInvalid, sdk.ErrUnauthorized, sdk.ErrForbidden, sdk.ErrNotFound, sdk.ErrConflict, sdk.ErrTooLarge} {
				if got := errors.Is(err, s); got != (s == tt.sentinel) {
					t.Errorf("errors.Is(err, %v) = %v", s, got)
				}
			}
			if msg := err.Error(); !strings.Contains(msg, e.Message) {
				t.Errorf("Error() = %q, lacks the message", msg)
			}
			for _, d := range tt.want.Details {
				if !strings.Contains(err.Error(), d) {
					t.Errorf("Error() = %q, lacks detail %q", err.Error(), d)
				}
			}
		})
	}
}

// TestPaging lists 7 pipelines 3 at a time through the cursors.
func TestPaging(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var cursors []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/pipelines", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		cursors = append(cursors, q.Get("cursor"))
		mu.Unlock()
		start := 0
		if c := q.Get("cursor"); c != "" {
			start, _ = strconv.Atoi(strings.TrimPrefix(c, "after-"))
		}
		limit, _ := strconv.Atoi(q.Get("limit"))
		page := sdk.Page[sdk.Pipeline]{Items: []sdk.Pipeline{}}
		for i := start; i < 7 && i < start+limit; i++ {
			page.Items = append(page.Items, sdk.Pipeline{ID: fmt.Sprint(i), Name: fmt.Sprintf("p%d", i)})
		}
		if start+limit < 7 {
			page.Next = fmt.Sprintf("after-%d", start+limit)
		}
		json.NewEncoder(w).Encode(page)
	})
	c := setup(t, mux)
	all, err := sdk.All(context.Background(), func(ctx context.Context, cursor string) (sdk.Page[sdk.Pipeline], error) {
		return c.ListPipelines(ctx, sdk.ListOptions{Cursor: cursor, Limit: 3})
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range all {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, " "); got != "p0 p1 p2 p3 p4 p5 p6" {
		t.Errorf("items %s", got)
	}
	if got := strings.Join(cursors, ","); got != ",after-3,after-6" {
		t.Errorf("cursors %q", got)
	}
}

// fakeRun is a test double of one run's part of the server: its log grows
// and it ends when the test says so.
type fakeRun struct {
	mu     sync.Mutex
	status sdk.RunStatus
	lines  []sdk.LogLine
	polls  int // GET /runs/{id} so far
}

func (f *fakeRun) add(texts ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range texts {
		f.lines = append(f.lines, sdk.LogLine{Stage: "build", Step: "s", Stream: "stdout", Seq: int64(len(f.lines) + 1), Text: s})
	}
}

func (f *fakeRun) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/runs/r1", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.polls++
		json.NewEncoder(w).Encode(sdk.Run{ID: "r1", Status: f.status})
	})
	// The cursor is the count of lines read; at most 2 lines a page, so a
	// reader has to page.
	mux.HandleFunc("GET /api/v1/runs/r1/logs", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		after, _ := strconv.Atoi(r.URL.Query().Get("after"))
		end := min(after+2, len(f.lines))
		json.NewEncoder(w).Encode(sdk.LogPage{Lines: append([]sdk.LogLine{}, f.lines[after:end]...), Next: strconv.Itoa(end)})
	})
	return mux
}

func TestFollowLogs(t *testing.T) {
	t.Parallel()
	f := &fakeRun{status: sdk.RunRunning}
	f.add("one", "two", "three")
	c := setup(t, f.handler())

	// While FollowLogs runs: more lines, then the last ones, written just
	// before the run ends: FollowLogs must read them after it sees it done.
	go func() {
		testkit.WaitFor(t, 10*time.Second, "the condition", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.polls >= 2 })
		f.add("four")
		testkit.WaitFor(t, 10*time.Second, "the condition", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.polls >= 4 })
		f.add("five", "six")
		f.mu.Lock()
		f.status = sdk.RunFailure
		f.mu.Unlock()
	}()

	var got []string
	run, err := c.FollowLogs(context.Background(), "r1", func(l sdk.LogLine) { got = append(got, l.Text) })
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != sdk.RunFailure {
		t.Errorf("status %s, want failure", run.Status)
	}
	if s := strings.Join(got, " "); s != "one two three four five six" {
		t.Errorf("lines %q", s)
	}
}

func TestFollowLogsStopsWithContext(t *testing.T) {
	t.Parallel()
	f := &fakeRun{status: sdk.RunRunning}
	c := setup(t, f.handler())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.FollowLogs(ctx, "r1", func(sdk.LogLine) {})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the context's", err)
	}
}

func TestFollowLogsMissingRun(t *testing.T) {
	t.Parallel()
	c := setup(t, &recorder{status: 404, body: `{"error":{"code":"not_found","message":"no run"}}`})
	if _, err := c.FollowLogs(context.Background(), "r9", func(sdk.LogLine) {}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("error %v, want not found", err)
	}
}

// wsServer is a test double of the server's WebSocket endpoint: it checks
// the token, confirms a subscription (or refuses channels named "bad"), and
// then sends the events handed to it.
type wsServer struct {
	events chan sdk.Event
	got    chan []string // the channels of each subscription
}

func (s *wsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/ws" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+token {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		io.WriteString(w, `{"error":{"code":"unauthorized","message":"missing or unknown token"}}`)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx := r.Context()
	_, b, err := conn.Read(ctx)
	if err != nil {
		return
	}
	var sub struct {
		Action   string   `json:"action"`
		Channels []string `json:"channels"`
	}
	if json.Unmarshal(b, &sub) != nil || sub.Action != "subscribe" {
		conn.Write(ctx, websocket.MessageText, []byte(`{"type":"error","message":"bad request"}`))
		return
	}
	s.got <- sub.Channels
	if len(sub.Channels) == 1 && sub.Channels[0] == "bad" {
		conn.Write(ctx, websocket.MessageText, []byte(`{"type":"error","message":"invalid channel \"bad\""}`))
		return
	}
	reply, _ := json.Marshal(map[string]any{"type": "subscribed", "channels": sub.Channels})
	conn.Write(ctx, websocket.MessageText, reply)
	for {
		select {
		case e := <-s.events:
			b, _ := json.Marshal(e)
			if conn.Write(ctx, websocket.MessageText, b) != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	ws := &wsServer{events: make(chan sdk.Event, 4), got: make(chan []string, 1)}
	c := setup(t, ws)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.Subscribe(ctx, []string{"run.started.>", "run.r1.>"})
	if err != nil {
		t.Fatal(err)
	}
	if got := <-ws.got; !reflect.DeepEqual(got, []string{"run.started.>", "run.r1.>"}) {
		t.Errorf("subscribed to %q", got)
	}
	want := []sdk.Event{
		{Channel: "run.started.p1.r1", Payload: json.RawMessage(`{"run_id":"r1"}`)},
		{Channel: "run.r1.step.s1.output", Payload: json.RawMessage(`{"line":"hi"}`)},
	}
	for _, e := range want {
		ws.events <- e
	}
	for i, w := range want {
		select {
		case e := <-events:
			if e.Channel != w.Channel || !jsonEqual(t, string(e.Payload), string(w.Payload)) {
				t.Errorf("event %d: %s %s, want %s %s", i, e.Channel, e.Payload, w.Channel, w.Payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d did not arrive", i)
		}
	}
	cancel()
	select {
	case _, ok := <-events:
		if ok {
			t.Error("an event after cancel")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the channel stayed open after cancel")
	}
}

func TestSubscribeRefused(t *testing.T) {
	t.Parallel()
	ws := &wsServer{events: make(chan sdk.Event), got: make(chan []string, 1)}
	c := setup(t, ws)
	_, err := c.Subscribe(context.Background(), []string{"bad"})
	if err == nil || !strings.Contains(err.Error(), `invalid channel "bad"`) {
		t.Errorf("error %v, want the server's", err)
	}

	srv := httptest.NewServer(ws)
	t.Cleanup(srv.Close)
	_, err = sdk.New(srv.URL, "wrong").Subscribe(context.Background(), []string{"x"})
	if !errors.Is(err, sdk.ErrUnauthorized) {
		t.Errorf("error %v, want unauthorized", err)
	}
}

func mustTime(s string) time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return tm
}

func ptr[T any](v T) *T { return &v }
