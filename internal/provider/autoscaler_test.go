package provider_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/provider"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// fakeProvider is a test double of a Provider: it records workers in
// memory. The Docker provider is tested against the real engine in
// internal/provider/docker and, with this autoscaler, in internal/server.
type fakeProvider struct {
	mu        sync.Mutex
	instances map[string]*provider.Instance // by handle
	tokens    map[string]string             // worker ID → token
	seq       int
	destroyed []string // worker IDs
}

func newFake() *fakeProvider {
	return &fakeProvider{instances: map[string]*provider.Instance{}, tokens: map[string]string{}}
}

func (f *fakeProvider) Name() string { return "fake" }

func (f *fakeProvider) Create(_ context.Context, s provider.Spec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	h := fmt.Sprintf("h%d", f.seq)
	f.instances[h] = &provider.Instance{WorkerID: s.ID, Handle: h, Running: true}
	f.tokens[s.ID] = s.Token
	return h, nil
}

func (f *fakeProvider) Destroy(_ context.Context, handle string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in, ok := f.instances[handle]; ok {
		f.destroyed = append(f.destroyed, in.WorkerID)
		delete(f.instances, handle)
	}
	return nil
}

func (f *fakeProvider) List(context.Context) ([]provider.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []provider.Instance
	for _, in := range f.instances {
		out = append(out, *in)
	}
	return out, nil
}

func (f *fakeProvider) Health(context.Context) error { return nil }

func (f *fakeProvider) Capacity(context.Context) (provider.Capacity, error) {
	return provider.Capacity{CPUs: 2, Workers: len(f.instances)}, nil
}

func (f *fakeProvider) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.instances)
}

// control makes real bootstrap tokens in the store, as agentsvc does.
type control struct{ st store.Store }

func (c control) CreateToken(ctx context.Context, ttl time.Duration, labels []string, by string) (string, store.BootstrapToken, error) {
	token, hash := pki.NewBootstrapToken()
	t, err := c.st.BootstrapTokens().Create(ctx, store.BootstrapToken{Hash: hash, Labels: labels, CreatedBy: by}, ttl)
	return token, t, err
}

func (c control) DrainAgent(ctx context.Context, id, _ string) (store.Agent, error) {
	return c.st.Agents().SetStatus(ctx, id, store.AgentDraining)
}

func setup(t *testing.T) (store.Store, *fakeProvider, *provider.Autoscaler) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := newFake()
	return st, f, &provider.Autoscaler{
		Store: st, Control: control{st}, Provider: f, Server: "127.0.0.1:1",
		Min: 1, Max: 4, Idle: time.Hour, Register: time.Hour,
	}
}

// register does what a worker's agent does when it starts: it spends its
// token and is recorded as an agent.
func register(t *testing.T, st store.Store, f *fakeProvider, workerID string) string {
	t.Helper()
	ctx := t.Context()
	f.mu.Lock()
	token := f.tokens[workerID]
	f.mu.Unlock()
	agentID := store.NewID()
	if _, err := st.BootstrapTokens().Spend(ctx, pki.HashToken(token), agentID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Agents().Register(ctx, store.Agent{ID: agentID, Name: "w-" + workerID[:8]}); err != nil {
		t.Fatal(err)
	}
	return agentID
}

func reconcile(t *testing.T, a *provider.Autoscaler) {
	t.Helper()
	if err := a.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func workers(t *testing.T, st store.Store, states ...store.WorkerState) []store.Worker {
	t.Helper()
	ws, err := st.Workers().List(t.Context(), "fake", states...)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

func TestDesired(t *testing.T) {
	a := &provider.Autoscaler{Min: 1, Max: 10, ScaleFactor: 0.5}
	for _, c := range []struct{ queued, busy, want int }{
		{0, 0, 1}, {1, 0, 1}, {3, 0, 2}, {20, 0, 10}, {4, 3, 5}, {0, 12, 10},
	} {
		if got := a.Desired(c.queued, c.busy); got != c.want {
			t.Errorf("Desired(%d queued, %d busy) = %d, want %d", c.queued, c.busy, got, c.want)
		}
	}
}

// TestBurstAndIdle: a burst of 20 jobs makes the pool grow to Max and no
// further; once the jobs are done and the workers idle past Idle, it
// shrinks back to Min, destroying only idle workers.
func TestBurstAndIdle(t *testing.T) {
	st, f, a := setup(t)
	ctx := t.Context()
	reconcile(t, a)
	if n := f.running(); n != a.Min {
		t.Fatalf("%d workers with an empty queue, want Min %d", n, a.Min)
	}
	for i := range 20 {
		if _, err := st.Jobs().Enqueue(ctx, store.Job{Name: fmt.Sprint("job-", i), Spec: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		reconcile(t, a)
		if n := f.running(); n != a.Max {
			t.Fatalf("%d workers for 20 queued jobs, want Max %d", n, a.Max)
		}
	}
	// The workers register and each takes a job.
	var agents []string
	for _, w := range workers(t, st, store.WorkerProvisioning) {
		agents = append(agents, register(t, st, f, w.ID))
	}
	reconcile(t, a)
	if ready := workers(t, st, store.WorkerReady); len(ready) != a.Max {
		t.Fatalf("%d ready workers, want %d", len(ready), a.Max)
	}
	var held []store.Job
	for _, id := range agents {
		js, err := st.Jobs().Claim(ctx, id, nil, 1, time.Minute)
		if err != nil || len(js) != 1 {
			t.Fatalf("claim: %v, %v", js, err)
		}
		held = append(held, js...)
	}
	a.Idle = time.Nanosecond
	reconcile(t, a)
	if n := f.running(); n != a.Max || len(f.destroyed) != 0 {
		t.Fatalf("busy workers were destroyed: %d running, destroyed %v", n, f.destroyed)
	}
	// The queue empties; the workers finish their jobs.
	for _, id := range queuedIDs(t, st) {
		if _, err := st.Jobs().Cancel(ctx, id, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range held {
		if _, err := st.Jobs().Complete(ctx, store.Result{Lease: j.Lease(), State: store.JobSucceeded}); err != nil {
			t.Fatal(err)
		}
	}
	reconcile(t, a) // notes when they became idle
	reconcile(t, a)
	if n := f.running(); n != a.Min {
		t.Fatalf("%d workers idle past their TTL, want Min %d", n, a.Min)
	}
	if done := workers(t, st, store.WorkerTerminated); len(done) != a.Max-a.Min {
		t.Errorf("%d terminated worker rows, want %d", len(done), a.Max-a.Min)
	}
	list, err := st.Agents().List(ctx)
	if err != nil || len(list) != a.Min {
		t.Errorf("agents after scale-down: %v, %v; want %d (the retired ones deregistered)", list, err, a.Min)
	}
}

// TestRegisterTimeout: a worker whose agent does not register in time is
// destroyed and marked failed; the queued job stays queued, and the next
// worker is provisioned for it.
func TestRegisterTimeout(t *testing.T) {
	st, f, a := setup(t)
	clk := testkit.NewClock()
	a.Min, a.Now = 0, clk.Now
	ctx := t.Context()
	jobs, err := st.Jobs().Enqueue(ctx, store.Job{Name: "waiting", Spec: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	reconcile(t, a)
	first := workers(t, st, store.WorkerProvisioning)
	if len(first) != 1 {
		t.Fatalf("provisioning %v, want one worker", first)
	}
	clk.Advance(a.Register - time.Second)
	reconcile(t, a)
	if w := workers(t, st, store.WorkerProvisioning); len(w) != 1 || w[0].ID != first[0].ID {
		t.Fatalf("provisioning before its deadline: %v, want the first worker still", w)
	}
	clk.Advance(2 * time.Second)
	reconcile(t, a)
	w, err := st.Workers().Get(ctx, first[0].ID)
	if err != nil || w.State != store.WorkerFailed || w.Error == "" {
		t.Fatalf("worker past its deadline: %+v, %v; want failed with a reason", w, err)
	}
	if len(f.destroyed) != 1 || f.destroyed[0] != w.ID {
		t.Errorf("destroyed %v, want %s", f.destroyed, w.ID)
	}
	j, err := st.Jobs().Get(ctx, jobs[0].ID)
	if err != nil || j.State != store.JobQueued {
		t.Errorf("job %+v, %v: want still queued", j, err)
	}
	if again := workers(t, st, store.WorkerProvisioning); len(again) != 1 || again[0].ID == w.ID {
		t.Errorf("provisioning after the failure: %v, want a new worker", again)
	}
}

// TestRecovery: what a server left half done is finished by the next
// one: a worker created but not recorded, a worker stuck terminating, and
// an instance no row knows.
func TestRecovery(t *testing.T) {
	st, f, a := setup(t)
	a.Min = 0
	ctx := t.Context()
	// Created by the provider, but the server stopped before recording the
	// handle.
	_, tok, err := control{st}.CreateToken(ctx, time.Minute, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Workers().Create(ctx, store.Worker{Provider: "fake", TokenID: tok.ID, Deadline: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Create(ctx, provider.Spec{ID: w.ID}); err != nil {
		t.Fatal(err)
	}
	// Stuck terminating.
	stuck, _ := st.Workers().Create(ctx, store.Worker{Provider: "fake", State: store.WorkerTerminating, Deadline: time.Now()})
	stuckHandle, _ := f.Create(ctx, provider.Spec{ID: stuck.ID})
	if _, err := st.Workers().Update(ctx, stuck.ID, store.WorkerUpdate{Handle: stuckHandle}); err != nil {
		t.Fatal(err)
	}
	// An orphan.
	f.Create(ctx, provider.Spec{ID: "no-such-worker"})

	reconcile(t, a)
	if n := f.running(); n != 1 {
		t.Errorf("%d instances, want only the unrecorded worker's", n)
	}
	got, _ := st.Workers().Get(ctx, stuck.ID)
	if got.State != store.WorkerTerminated {
		t.Errorf("stuck worker %s, want terminated", got.State)
	}
	if len(f.destroyed) != 2 {
		t.Errorf("destroyed %v, want the stuck worker and the orphan", f.destroyed)
	}
	if got, _ := st.Workers().Get(ctx, w.ID); got.Handle == "" || got.State != store.WorkerProvisioning {
		t.Errorf("unrecorded worker %+v: want its handle found, still provisioning", got)
	}
}

func queuedIDs(t *testing.T, st store.Store) []string {
	t.Helper()
	js, err := st.Jobs().List(t.Context(), store.JobFilter{State: store.JobQueued})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range js {
		ids = append(ids, j.ID)
	}
	return ids
}

// TestOneLeader: two servers' autoscalers share a store and a provider;
// only the lease holder creates or destroys workers, and the other takes
// over, with the same workers, once the holder stops. The second asks for
// a bigger pool, so that whether it acted shows.
func TestOneLeader(t *testing.T) {
	st, f, first := setup(t)
	second := &provider.Autoscaler{
		Store: st, Control: control{st}, Provider: f, Server: "127.0.0.1:1",
		Min: 4, Max: 4, Idle: time.Hour, Register: time.Hour,
	}
	ctx := t.Context()
	for i := range 2 {
		if _, err := st.Jobs().Enqueue(ctx, store.Job{Name: fmt.Sprint("job-", i), Spec: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	reconcile(t, first)
	reconcile(t, second)
	reconcile(t, first)
	if n := f.running(); n != 2 {
		t.Fatalf("%d workers for 2 queued jobs, want 2: the follower acted", n)
	}

	// The first stops; its Run gives up the lease, and the second leads.
	stopped, stop := context.WithCancel(ctx)
	stop()
	first.Run(stopped, func() <-chan struct{} { return nil })
	reconcile(t, second)
	if n := f.running(); n != 4 || len(f.destroyed) != 0 {
		t.Fatalf("%d workers after the takeover (destroyed %v), want 4: the first's two and two more", n, f.destroyed)
	}
	if ws := workers(t, st, store.WorkerProvisioning); len(ws) != 4 {
		t.Errorf("%d provisioning rows, want 4", len(ws))
	}
}
