package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/provider"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/postgres/pgtest"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// bundle is one API server on a real listener, over a real SQLite (or
// PostgreSQL) store.
type bundle struct {
	srv     *httptest.Server
	api     *api.Server
	store   store.Store
	control *fakeControl
	tokens  *memTokens
	box     *secrets.Box
	logs    *lockedBuffer

	admin, developer, viewer string // tokens
}

type options struct {
	js        jetstream.JetStream
	ready     func(context.Context) error
	providers []provider.Provider
	wrap      func(store.Store) store.Store // the API's store; nil: the database itself
	postgres  bool                          // a fresh PostgreSQL schema instead of SQLite; skips without one
}

func setup(t testing.TB) *bundle { return setupWith(t, options{}) }

func setupWith(t testing.TB, o options) *bundle {
	t.Helper()
	ctx := context.Background()
	var st store.Store
	var err error
	if o.postgres {
		st, err = postgres.Open(ctx, pgtest.DSN(t))
	} else {
		st, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := secrets.LoadKey(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	box, err := secrets.NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{store: st, control: &fakeControl{store: st}, tokens: newMemTokens(), box: box, logs: &lockedBuffer{}}
	var apiStore store.Store = st
	if o.wrap != nil {
		apiStore = o.wrap(st)
	}
	b.api = api.New(api.Config{
		Store:     apiStore,
		Control:   b.control,
		Tokens:    b.tokens,
		Secrets:   box,
		JetStream: o.js,
		Ready:     o.ready,
		Providers: o.providers,
		Logger:    slog.New(slog.NewJSONHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	b.srv = httptest.NewServer(b.api)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.api.Shutdown(sctx)
		b.srv.Close()
	})
	b.admin = b.addToken(t, "root", api.RoleAdmin)
	b.developer = b.addToken(t, "dev", api.RoleDeveloper)
	b.viewer = b.addToken(t, "watcher", api.RoleViewer)
	return b
}

func (b *bundle) addToken(t testing.TB, name string, role api.Role) string {
	t.Helper()
	tok := api.NewToken()
	if _, err := b.tokens.Create(context.Background(), api.Token{Name: name, Role: role, Hash: api.HashToken(tok)}); err != nil {
		t.Fatal(err)
	}
	return tok
}

// response is an answer: status, headers and body.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into v, failing the test if it is not JSON.
func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d is not JSON: %v\n%s", r.status, err, r.body)
	}
}

// obj decodes the body as a JSON object.
func (r response) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	return m
}

// apiErr decodes an error answer.
func (r response) apiErr(t *testing.T) (code, message string, details []string) {
	t.Helper()
	var e struct {
		Error struct {
			Code    string   `json:"code"`
			Message string   `json:"message"`
			Details []string `json:"details"`
		} `json:"error"`
	}
	r.json(t, &e)
	if e.Error.Code == "" {
		t.Fatalf("answer %d is not an error: %s", r.status, r.body)
	}
	return e.Error.Code, e.Error.Message, e.Error.Details
}

// do calls the API with token (none if empty) and body (JSON-encoded unless
// it is a string or []byte).
func (b *bundle) do(t testing.TB, method, path, token string, body any) response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	case io.Reader: // of unknown length: sent chunked
		rd = v
	default:
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// want fails the test unless r has the status.
func (r response) want(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

// wantError fails the test unless r is an error with status and code.
func (r response) wantError(t *testing.T, status int, code string) (message string, details []string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	got, message, details := r.apiErr(t)
	if got != code {
		t.Fatalf("error code %q, want %q: %s", got, code, r.body)
	}
	return message, details
}

// auditEntries returns the audit log, oldest first.
func (b *bundle) auditEntries(t *testing.T) []store.AuditEntry {
	t.Helper()
	es, err := b.store.Audit().List(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(es)
	return es
}

// lastAudit returns the newest audit entry, failing if there is none.
func (b *bundle) lastAudit(t *testing.T) store.AuditEntry {
	t.Helper()
	es := b.auditEntries(t)
	if len(es) == 0 {
		t.Fatal("no audit entries")
	}
	return es[len(es)-1]
}

func (b *bundle) wantAudit(t *testing.T, actor, action, resourceType, resourceID string) store.AuditEntry {
	t.Helper()
	e := b.lastAudit(t)
	if e.Actor != actor || e.Action != action || e.ResourceType != resourceType || (resourceID != "" && e.ResourceID != resourceID) {
		t.Fatalf("last audit entry = %+v, want %s %s %s %s", e, actor, action, resourceType, resourceID)
	}
	return e
}

const validPipeline = `version: "1"
name: demo
stages:
  - name: build
    steps:
      - name: compile
        run: echo building
  - name: deploy
    steps:
      - name: ship
        run: echo deploying
`

// createPipeline creates a pipeline through the API and returns its ID.
func (b *bundle) createPipeline(t testing.TB, name string) string {
	t.Helper()
	var p struct{ ID string }
	b.do(t, "POST", "/api/v1/pipelines", b.developer, map[string]string{"name": name, "definition": validPipeline}).want(t, 201).json(t, &p)
	return p.ID
}

// lockedBuffer is a log sink for concurrent handlers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fakeControl is a test double of the scheduler: it records its calls and
// makes the plain store changes that the real one would make, so that the
// API's answers hold real rows. It plans nothing.
type fakeControl struct {
	store store.Store

	mu    sync.Mutex
	calls []string
}

// WaitingReason gives every queued job the same reason.
func (f *fakeControl) WaitingReason(_ context.Context, j store.Job) (string, error) {
	if j.State != store.JobQueued {
		return "", nil
	}
	return "no agent is connected", nil
}

func (f *fakeControl) called(format string, args ...any) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fakeControl) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeControl) TriggerRun(ctx context.Context, pipelineID string, req scheduler.TriggerRequest) (store.Run, error) {
	f.called("TriggerRun %s %s %s", pipelineID, req.Branch, req.Actor)
	ref := req.Ref
	if ref == "" && req.Branch != "" {
		ref = "refs/heads/" + req.Branch
	}
	trig, err := json.Marshal(plan.Run{Version: spec.Version, Trigger: plan.Trigger{Event: req.Event, Branch: req.Branch, SHA: req.SHA, Ref: ref, Variables: req.Variables, Actor: req.Actor}})
	if err != nil {
		return store.Run{}, err
	}
	run, err := f.store.Runs().Create(ctx, store.Run{PipelineID: pipelineID, Trigger: trig, GitRef: ref, GitSHA: req.SHA})
	if err != nil {
		return run, err
	}
	return run, f.audit(ctx, req.Actor, "run.trigger", "run", run.ID, map[string]string{"pipeline_id": pipelineID})
}

// audit writes the audit entry that the real control plane writes with
// its change.
func (f *fakeControl) audit(ctx context.Context, actor, action, resourceType, id string, details any) error {
	var d json.RawMessage
	if details != nil {
		d, _ = json.Marshal(details)
	}
	_, err := f.store.Audit().Record(ctx, store.AuditEntry{Actor: actor, Action: action, ResourceType: resourceType, ResourceID: id, Details: d})
	return err
}

func (f *fakeControl) CancelRun(ctx context.Context, runID, actor string) (store.Run, error) {
	f.called("CancelRun %s %s", runID, actor)
	r, err := f.store.Runs().SetStatus(ctx, runID, store.RunCancelled)
	if err != nil {
		return r, err
	}
	return r, f.audit(ctx, actor, "run.cancel", "run", runID, nil)
}

// Approve accepts only the stage named "deploy".
func (f *fakeControl) Approve(ctx context.Context, runID, stage string, v scheduler.Vote) (store.Run, error) {
	f.called("Approve %s %s %t %s %s %s", runID, stage, v.Approve, v.Actor, v.Role, v.Comment)
	r, err := f.store.Runs().Get(ctx, runID)
	if err != nil {
		return r, err
	}
	if stage != "deploy" {
		return store.Run{}, fmt.Errorf("%w: no stage %q waits for an approval", store.ErrConflict, stage)
	}
	action := "run.approve"
	if !v.Approve {
		action = "run.reject"
	}
	return r, f.audit(ctx, v.Actor, action, "run", runID, nil)
}

// SubmitJob panics for a job named "panic", to test recovery.
func (f *fakeControl) SubmitJob(ctx context.Context, spec jobspec.Spec, actor string) (store.Job, error) {
	f.called("SubmitJob %s %s", spec.Name, actor)
	if spec.Name == "panic" {
		panic("the fake control plane was asked to panic")
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return store.Job{}, err
	}
	jobs, err := f.store.Jobs().Enqueue(ctx, store.Job{Name: spec.Name, Spec: b, Labels: spec.Labels, Priority: spec.Priority, MaxAttempts: spec.MaxAttempts})
	if err != nil {
		return store.Job{}, err
	}
	return jobs[0], f.audit(ctx, actor, "job.submit", "job", jobs[0].ID, nil)
}

func (f *fakeControl) SubmitJobs(ctx context.Context, specs []jobspec.Spec, actor string) ([]store.Job, error) {
	var jobs []store.Job
	for _, spec := range specs {
		j, err := f.SubmitJob(ctx, spec, actor)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

func (f *fakeControl) CancelJob(ctx context.Context, id, actor string) (store.Job, error) {
	f.called("CancelJob %s %s", id, actor)
	j, err := f.store.Jobs().Cancel(ctx, id, "cancelled by "+actor)
	if err != nil {
		return j, err
	}
	return j, f.audit(ctx, actor, "job.cancel", "job", id, nil)
}

func (f *fakeControl) DrainAgent(ctx context.Context, id, actor string) (store.Agent, error) {
	f.called("DrainAgent %s %s", id, actor)
	a, err := f.store.Agents().SetStatus(ctx, id, store.AgentDraining)
	if err != nil {
		return a, err
	}
	return a, f.audit(ctx, actor, "agent.drain", "agent", id, nil)
}

// memTokens is a test double of the token table: an in-memory TokenStore.
type memTokens struct {
	mu     sync.Mutex
	tokens map[string]api.Token // by ID
}

func newMemTokens() *memTokens { return &memTokens{tokens: map[string]api.Token{}} }

func (m *memTokens) Create(_ context.Context, t api.Token) (api.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.tokens {
		if o.Name == t.Name || o.Hash == t.Hash {
			return api.Token{}, fmt.Errorf("%w: token %q exists", store.ErrConflict, t.Name)
		}
	}
	if t.ID == "" {
		t.ID = store.NewID()
	}
	t.CreatedAt = time.Now().UTC()
	m.tokens[t.ID] = t
	return t, nil
}

func (m *memTokens) GetByHash(_ context.Context, hash string) (api.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tokens {
		if t.Hash == hash {
			return t, nil
		}
	}
	return api.Token{}, store.ErrNotFound
}

func (m *memTokens) List(context.Context) ([]api.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Token, 0, len(m.tokens))
	for _, t := range m.tokens {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b api.Token) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (m *memTokens) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tokens[id]; !ok {
		return store.ErrNotFound
	}
	delete(m.tokens, id)
	return nil
}

func (m *memTokens) Touch(_ context.Context, id string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[id]
	if !ok {
		return store.ErrNotFound
	}
	t.LastUsedAt = &at
	m.tokens[id] = t
	return nil
}
