package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/sdk"
)

// fakeToken is the one token the fake server accepts.
const fakeToken = "oxt_fake"

// fakeServer is a test double of the Oxide API server (docs/api.md) for the
// client commands' tests: in memory, one token, and runs that play a fixed
// script instead of executing anything. A run goes running on its first
// read and ends on its second, writing one log line at each step; it fails
// when its pipeline's name contains "fail". Definitions holding
// "# server-invalid" are rejected as invalid_pipeline. The real server is
// exercised by the scripts in testdata/server.
type fakeServer struct {
	*httptest.Server

	mu        sync.Mutex
	reqs      []string // "METHOD PATH?QUERY"
	bodies    map[string]string
	pipelines []*sdk.Pipeline
	runs      map[string]*fakeRun
	jobs      []*sdk.Job
	templates []*sdk.Template
	agents    []*sdk.Agent
	workers   []sdk.Worker // newest first
	providers []sdk.Provider
	secrets   map[string]sdk.SecretInfo // by scope/scope_id/name
	seq       int
}

type fakeRun struct {
	run   sdk.Run
	reads int
	lines []sdk.LogLine
}

func newFake(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{bodies: map[string]string{}, runs: map[string]*fakeRun{}, secrets: map[string]sdk.SecretInfo{}}
	now := time.Now().UTC()
	f.agents = []*sdk.Agent{{ID: "a1", Name: "builder-1", Labels: []string{"linux"}, Status: sdk.AgentOnline, Version: "dev", OS: "linux", Arch: "amd64", Capacity: 2, LastHeartbeatAt: &now, RegisteredAt: now}}
	f.workers = []sdk.Worker{
		{ID: "0b9e2f4c-5d6e-4f70-8a9b-0c1d2e3f4a5b", Provider: "docker", State: sdk.WorkerReady, AgentID: "a1", Handle: "c0ffee", Deadline: now, CreatedAt: now, UpdatedAt: now},
		{ID: "7d3a1b2c-3d4e-4f50-9a6b-7c8d9e0f1a2b", Provider: "docker", State: sdk.WorkerFailed, Error: "the agent did not register in 1m0s", Deadline: now, CreatedAt: now, UpdatedAt: now},
	}
	f.providers = []sdk.Provider{
		{Name: "docker", Healthy: true, Capacity: &sdk.Capacity{CPUs: 8, MemoryBytes: 16 << 30, Workers: 1}, Workers: map[sdk.WorkerState]int{sdk.WorkerReady: 1, sdk.WorkerFailed: 1, sdk.WorkerTerminated: 0}},
		{Name: "k8s", Error: "cluster unreachable", CapacityError: "cluster unreachable", Workers: map[sdk.WorkerState]int{}},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/health", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, map[string]string{"status": "ok"}) })
	f.handle(mux, "POST /api/v1/pipelines", f.createPipeline)
	f.handle(mux, "GET /api/v1/pipelines", func(w http.ResponseWriter, r *http.Request) {
		items := make([]sdk.Pipeline, len(f.pipelines))
		for i, p := range f.pipelines {
			items[i] = *p
		}
		replyPage(w, r, items)
	})
	f.handle(mux, "GET /api/v1/pipelines/{id}", func(w http.ResponseWriter, r *http.Request) {
		if p := f.pipeline(r.PathValue("id")); p != nil {
			reply(w, 200, p)
			return
		}
		fail(w, 404, "not_found", "no pipeline "+strconv.Quote(r.PathValue("id")))
	})
	f.handle(mux, "PUT /api/v1/pipelines/{id}", f.updatePipeline)
	f.handle(mux, "DELETE /api/v1/pipelines/{id}", func(w http.ResponseWriter, r *http.Request) {
		for i, p := range f.pipelines {
			if p.ID == r.PathValue("id") || p.Name == r.PathValue("id") {
				f.pipelines = append(f.pipelines[:i], f.pipelines[i+1:]...)
				w.WriteHeader(204)
				return
			}
		}
		fail(w, 404, "not_found", "no such pipeline")
	})
	f.handle(mux, "POST /api/v1/pipelines/{id}/runs", f.trigger)
	f.handle(mux, "GET /api/v1/pipelines/{id}/runs", func(w http.ResponseWriter, r *http.Request) {
		var items []sdk.Run
		for _, fr := range f.runs {
			if fr.run.PipelineID == r.PathValue("id") || fr.run.PipelineName == r.PathValue("id") {
				items = append(items, fr.run)
			}
		}
		replyPage(w, r, items)
	})
	f.handle(mux, "GET /api/v1/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		fr := f.runs[r.PathValue("id")]
		if fr == nil {
			fail(w, 404, "not_found", "no such run")
			return
		}
		fr.advance()
		reply(w, 200, fr.run)
	})
	f.handle(mux, "POST /api/v1/runs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		fr := f.runs[r.PathValue("id")]
		switch {
		case fr == nil:
			fail(w, 404, "not_found", "no such run")
		case fr.run.Status.Done():
			fail(w, 409, "conflict", "the run is done")
		default:
			fr.run.Status = sdk.RunCancelled
			reply(w, 202, fr.run)
		}
	})
	f.handle(mux, "GET /api/v1/runs/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		fr := f.runs[r.PathValue("id")]
		if fr == nil {
			fail(w, 404, "not_found", "no such run")
			return
		}
		after, _ := strconv.Atoi(r.URL.Query().Get("after"))
		after = min(after, len(fr.lines))
		reply(w, 200, sdk.LogPage{Lines: append([]sdk.LogLine{}, fr.lines[after:]...), Next: strconv.Itoa(len(fr.lines))})
	})
	f.handle(mux, "POST /api/v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		var spec sdk.JobSpec
		if !decode(w, r, &spec) {
			return
		}
		reply(w, 201, f.addJob(spec))
	})
	f.handle(mux, "GET /api/v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		var items []sdk.Job
		for _, j := range f.jobs {
			if s := r.URL.Query().Get("state"); s == "" || string(j.State) == s {
				items = append(items, *j)
			}
		}
		replyPage(w, r, items)
	})
	f.handle(mux, "GET /api/v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		for _, j := range f.jobs {
			if j.ID == r.PathValue("id") {
				reply(w, 200, j)
				return
			}
		}
		fail(w, 404, "not_found", "no such job")
	})
	f.handle(mux, "POST /api/v1/jobs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		for _, j := range f.jobs {
			if j.ID == r.PathValue("id") {
				j.State = sdk.JobCancelled
				reply(w, 202, j)
				return
			}
		}
		fail(w, 404, "not_found", "no such job")
	})
	f.handle(mux, "POST /api/v1/templates", func(w http.ResponseWriter, r *http.Request) {
		var req sdk.TemplateRequest
		if !decode(w, r, &req) {
			return
		}
		if f.template(req.Name) != nil {
			fail(w, 409, "conflict", "a template named "+strconv.Quote(req.Name)+" exists")
			return
		}
		t := &sdk.Template{ID: f.id("t"), Name: req.Name, Description: req.Description, Parameters: req.Parameters, Spec: req.Spec, CreatedAt: time.Now(), UpdatedAt: time.Now()}
		f.templates = append(f.templates, t)
		reply(w, 201, t)
	})
	f.handle(mux, "GET /api/v1/templates", func(w http.ResponseWriter, r *http.Request) {
		items := make([]sdk.Template, len(f.templates))
		for i, t := range f.templates {
			items[i] = *t
		}
		replyPage(w, r, items)
	})
	f.handle(mux, "DELETE /api/v1/templates/{id}", func(w http.ResponseWriter, r *http.Request) {
		for i, t := range f.templates {
			if t.ID == r.PathValue("id") || t.Name == r.PathValue("id") {
				f.templates = append(f.templates[:i], f.templates[i+1:]...)
				w.WriteHeader(204)
				return
			}
		}
		fail(w, 404, "not_found", "no such template")
	})
	f.handle(mux, "GET /api/v1/templates/{id}", func(w http.ResponseWriter, r *http.Request) {
		if t := f.template(r.PathValue("id")); t != nil {
			reply(w, 200, t)
			return
		}
		fail(w, 404, "not_found", "no such template")
	})
	f.handle(mux, "POST /api/v1/templates/{id}/instantiate", f.instantiate)
	f.handle(mux, "GET /api/v1/agents", func(w http.ResponseWriter, r *http.Request) {
		items := make([]sdk.Agent, len(f.agents))
		for i, a := range f.agents {
			items[i] = *a
		}
		replyPage(w, r, items)
	})
	f.handle(mux, "GET /api/v1/agents/{id}", func(w http.ResponseWriter, r *http.Request) {
		for _, a := range f.agents {
			if a.ID == r.PathValue("id") {
				reply(w, 200, a)
				return
			}
		}
		fail(w, 404, "not_found", "no such agent")
	})
	f.handle(mux, "POST /api/v1/agents/{id}/drain", func(w http.ResponseWriter, r *http.Request) {
		for _, a := range f.agents {
			if a.ID == r.PathValue("id") {
				a.Status = sdk.AgentDraining
				reply(w, 200, a)
				return
			}
		}
		fail(w, 404, "not_found", "no such agent")
	})
	f.handle(mux, "GET /api/v1/workers", func(w http.ResponseWriter, r *http.Request) {
		states, provider := r.URL.Query()["state"], r.URL.Query().Get("provider")
		for _, s := range states {
			if !slices.Contains([]sdk.WorkerState{sdk.WorkerProvisioning, sdk.WorkerReady, sdk.WorkerTerminating, sdk.WorkerTerminated, sdk.WorkerFailed}, sdk.WorkerState(s)) {
				fail(w, 400, "invalid_request", fmt.Sprintf("state %q is not one of provisioning, ready, terminating, terminated, failed", s))
				return
			}
		}
		var items []sdk.Worker
		for _, wk := range f.workers {
			if (len(states) == 0 || slices.Contains(states, string(wk.State))) && (provider == "" || provider == wk.Provider) {
				items = append(items, wk)
			}
		}
		replyPage(w, r, items)
	})
	f.handle(mux, "GET /api/v1/providers", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, sdk.Page[sdk.Provider]{Items: f.providers})
	})
	f.handle(mux, "PUT /api/v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Value   string `json:"value"`
			Scope   string `json:"scope"`
			ScopeID string `json:"scope_id"`
		}
		if !decode(w, r, &req) {
			return
		}
		if req.Scope == "" {
			req.Scope = sdk.ScopeOrganization
		}
		s := sdk.SecretInfo{Name: r.PathValue("name"), Scope: req.Scope, ScopeID: req.ScopeID, CreatedAt: time.Now(), UpdatedAt: time.Now()}
		f.secrets[req.Scope+"/"+req.ScopeID+"/"+s.Name] = s
		reply(w, 200, s)
	})
	f.handle(mux, "GET /api/v1/secrets", func(w http.ResponseWriter, r *http.Request) {
		scope := r.URL.Query().Get("scope")
		if scope == "" {
			scope = sdk.ScopeOrganization
		}
		var items []sdk.SecretInfo
		for _, s := range f.secrets {
			if s.Scope == scope && s.ScopeID == r.URL.Query().Get("scope_id") {
				items = append(items, s)
			}
		}
		replyPage(w, r, items)
	})
	f.handle(mux, "DELETE /api/v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		scope := r.URL.Query().Get("scope")
		if scope == "" {
			scope = sdk.ScopeOrganization
		}
		key := scope + "/" + r.URL.Query().Get("scope_id") + "/" + r.PathValue("name")
		if _, ok := f.secrets[key]; !ok {
			fail(w, 404, "not_found", "no such secret")
			return
		}
		delete(f.secrets, key)
		w.WriteHeader(204)
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// handle registers an authenticated handler that runs under f.mu and
// records its request.
func (f *fakeServer) handle(mux *http.ServeMux, pattern string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		f.mu.Lock()
		defer f.mu.Unlock()
		req := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			req += "?" + r.URL.RawQuery
		}
		f.reqs = append(f.reqs, req)
		f.bodies[r.Method+" "+r.URL.Path] = string(b)
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			fail(w, 401, "unauthorized", "missing or unknown token")
			return
		}
		h(w, r)
	})
}

// requests returns the requests so far, and forgets them.
func (f *fakeServer) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs
	f.reqs = nil
	return r
}

// body returns the body of the last request to "METHOD PATH".
func (f *fakeServer) body(req string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[req]
}

func (f *fakeServer) id(prefix string) string {
	f.seq++
	return fmt.Sprintf("%s%d", prefix, f.seq)
}

func (f *fakeServer) pipeline(idOrName string) *sdk.Pipeline {
	for _, p := range f.pipelines {
		if p.ID == idOrName || p.Name == idOrName {
			return p
		}
	}
	return nil
}

func (f *fakeServer) template(idOrName string) *sdk.Template {
	for _, t := range f.templates {
		if t.ID == idOrName || t.Name == idOrName {
			return t
		}
	}
	return nil
}

func (f *fakeServer) createPipeline(w http.ResponseWriter, r *http.Request) {
	var req sdk.CreatePipelineRequest
	if !decode(w, r, &req) || !validDefinition(w, req.Definition) {
		return
	}
	if f.pipeline(req.Name) != nil {
		fail(w, 409, "conflict", "a pipeline named "+strconv.Quote(req.Name)+" exists")
		return
	}
	now := time.Now().UTC()
	p := &sdk.Pipeline{ID: f.id("p"), Name: req.Name, Repository: req.Repository, Definition: req.Definition, CreatedAt: now, UpdatedAt: now}
	f.pipelines = append(f.pipelines, p)
	reply(w, 201, p)
}

func (f *fakeServer) updatePipeline(w http.ResponseWriter, r *http.Request) {
	var req sdk.UpdatePipelineRequest
	if !decode(w, r, &req) {
		return
	}
	p := f.pipeline(r.PathValue("id"))
	if p == nil {
		fail(w, 404, "not_found", "no such pipeline")
		return
	}
	if req.Definition != nil {
		if !validDefinition(w, *req.Definition) {
			return
		}
		p.Definition = *req.Definition
	}
	if req.Name != nil {
		p.Name = *req.Name
	}
	if req.Repository != nil {
		p.Repository = *req.Repository
	}
	p.UpdatedAt = time.Now().UTC()
	reply(w, 200, p)
}

func validDefinition(w http.ResponseWriter, def string) bool {
	if strings.Contains(def, "# server-invalid") {
		reply(w, 400, map[string]any{"error": map[string]any{"code": "invalid_pipeline", "message": "pipeline definition is invalid",
			"details": []string{"pipeline.yaml:1:1: the server says no"}}})
		return false
	}
	return true
}

func (f *fakeServer) trigger(w http.ResponseWriter, r *http.Request) {
	var req sdk.TriggerRequest
	if !decode(w, r, &req) {
		return
	}
	p := f.pipeline(r.PathValue("id"))
	if p == nil {
		fail(w, 404, "not_found", "no such pipeline")
		return
	}
	n := 1
	for _, fr := range f.runs {
		if fr.run.PipelineID == p.ID {
			n++
		}
	}
	if req.Event == "" {
		req.Event = "manual"
	}
	run := sdk.Run{ID: f.id("r"), PipelineID: p.ID, PipelineName: p.Name, Number: n, Status: sdk.RunQueued,
		Branch: req.Branch, SHA: req.SHA, Ref: req.Ref, Event: req.Event, Variables: req.Variables, CreatedAt: time.Now().UTC(),
		Stages:   []sdk.Stage{{ID: "s1", Name: "build", Index: 0, Status: sdk.StatusPending, Steps: []sdk.Step{{ID: "st1", Name: "hello", Key: "hello", Status: sdk.StatusPending}}}},
		Warnings: []string{"pipeline.yaml:1:1: warning: the fake warns"}}
	f.runs[run.ID] = &fakeRun{run: run}
	reply(w, 201, run)
}

// advance plays the next step of the run's script.
func (fr *fakeRun) advance() {
	now := time.Now().UTC()
	st := &fr.run.Stages[0]
	switch fr.reads++; {
	case fr.run.Status.Done():
	case fr.reads == 1:
		fr.run.Status, fr.run.StartedAt = sdk.RunRunning, &now
		st.Status, st.StartedAt, st.Steps[0].Status = sdk.StatusRunning, &now, sdk.StatusRunning
		fr.log("hello from the fake")
	default:
		fr.log("bye")
		code, status, rs := 0, sdk.StatusSuccess, sdk.RunSuccess
		if strings.Contains(fr.run.PipelineName, "fail") {
			code, status, rs = 3, sdk.StatusFailure, sdk.RunFailure
			st.Reason = "step hello failed"
		}
		st.Status, st.FinishedAt = status, &now
		st.Steps[0].Status, st.Steps[0].ExitCode = status, &code
		fr.run.Status, fr.run.FinishedAt = rs, &now
	}
}

func (fr *fakeRun) log(text string) {
	fr.lines = append(fr.lines, sdk.LogLine{Stage: "build", Step: "hello", Stream: "stdout", Seq: int64(len(fr.lines) + 1), Text: text, Time: time.Now().UTC()})
}

func (f *fakeServer) addJob(spec sdk.JobSpec) *sdk.Job {
	maxAttempts := spec.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = 3
	}
	j := &sdk.Job{ID: f.id("j"), Name: spec.Name, State: sdk.JobQueued, MaxAttempts: maxAttempts, Priority: spec.Priority, Labels: spec.Labels, Spec: spec, CreatedAt: time.Now().UTC()}
	f.jobs = append(f.jobs, j)
	return j
}

// instantiate checks parameters as docs/api.md says: missing required,
// unknown and wrongly typed ones are invalid_request. Its placeholders are
// filled by plain replacement, enough for the tests.
func (f *fakeServer) instantiate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Parameters map[string]any `json:"parameters"`
	}
	if !decode(w, r, &req) {
		return
	}
	t := f.template(r.PathValue("id"))
	if t == nil {
		fail(w, 404, "not_found", "no such template")
		return
	}
	var problems []string
	known := map[string]bool{}
	cmd := t.Spec.Command
	for _, p := range t.Parameters {
		known[p.Name] = true
		v, ok := req.Parameters[p.Name]
		if !ok {
			if p.Required {
				problems = append(problems, "missing parameter "+p.Name)
			}
			v = p.Default
		}
		okType := true
		switch v.(type) {
		case float64:
			okType = p.Type == sdk.ParamInt
		case bool:
			okType = p.Type == sdk.ParamBool
		case string:
			okType = p.Type == sdk.ParamString || p.Type == sdk.ParamEnum
		}
		if !okType {
			problems = append(problems, fmt.Sprintf("parameter %s: want %s", p.Name, p.Type))
		}
		cmd = strings.ReplaceAll(cmd, "{{ ."+p.Name+" }}", fmt.Sprint(v))
	}
	for k := range req.Parameters {
		if !known[k] {
			problems = append(problems, "unknown parameter "+k)
		}
	}
	if len(problems) > 0 {
		fail(w, 400, "invalid_request", strings.Join(problems, "; "))
		return
	}
	spec := t.Spec
	spec.Command = cmd
	reply(w, 201, f.addJob(spec))
}

// decode reads a JSON body as the server does: unknown fields are
// invalid_request.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		fail(w, 400, "invalid_request", err.Error())
		return false
	}
	return true
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	reply(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

// replyPage answers a list, honouring limit and cursor (an offset).
func replyPage[T any](w http.ResponseWriter, r *http.Request, items []T) {
	start, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit == 0 {
		limit = 50
	}
	start = min(start, len(items))
	end := min(start+limit, len(items))
	p := sdk.Page[T]{Items: append([]T{}, items[start:end]...)}
	if end < len(items) {
		p.Next = strconv.Itoa(end)
	}
	reply(w, 200, p)
}
