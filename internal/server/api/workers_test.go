package api_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/provider"
	"github.com/oxide-ci/oxide/internal/store"
)

// fakeProvider is a test double of a provider of elastic workers: it
// answers Health and Capacity with what it was given and makes no workers.
type fakeProvider struct {
	name        string
	health      error
	capacity    provider.Capacity
	capacityErr error
}

func (p *fakeProvider) Name() string { return p.name }
func (p *fakeProvider) Create(context.Context, provider.Spec) (string, error) {
	return "", errors.New("the fake provider makes no workers")
}
func (p *fakeProvider) Destroy(context.Context, string) error             { return nil }
func (p *fakeProvider) List(context.Context) ([]provider.Instance, error) { return nil, nil }
func (p *fakeProvider) Health(context.Context) error                      { return p.health }
func (p *fakeProvider) Capacity(context.Context) (provider.Capacity, error) {
	return p.capacity, p.capacityErr
}

// addWorker stores a worker as the autoscaler would.
func (b *bundle) addWorker(t *testing.T, w store.Worker) store.Worker {
	t.Helper()
	w.Deadline = time.Now().Add(time.Minute)
	w, err := b.store.Workers().Create(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w1 := b.addWorker(t, store.Worker{Provider: "docker"})
	w2 := b.addWorker(t, store.Worker{Provider: "docker", State: store.WorkerReady, AgentID: "a1", Handle: "c0ffee"})
	w3 := b.addWorker(t, store.Worker{Provider: "k8s", State: store.WorkerFailed, Error: "the agent did not register"})

	type page struct {
		Items []map[string]any
		Next  string
	}
	ids := func(path string) []string {
		t.Helper()
		var p page
		b.do(t, "GET", path, b.viewer, nil).want(t, 200).json(t, &p)
		out := []string{}
		for _, it := range p.Items {
			out = append(out, it["id"].(string))
		}
		return out
	}

	var all page
	b.do(t, "GET", "/api/v1/workers", b.viewer, nil).want(t, 200).json(t, &all)
	if len(all.Items) != 3 || all.Next != "" {
		t.Fatalf("workers = %+v", all)
	}
	ready := all.Items[1]
	for _, k := range []string{"id", "provider", "state", "agent_id", "handle", "deadline", "created_at", "updated_at"} {
		if _, ok := ready[k]; !ok {
			t.Errorf("worker lacks %q: %v", k, ready)
		}
	}
	if ready["id"] != w2.ID || ready["state"] != "ready" || ready["agent_id"] != "a1" || ready["handle"] != "c0ffee" || ready["error"] != nil {
		t.Errorf("ready worker = %v", ready)
	}
	if failed := all.Items[0]; failed["error"] != "the agent did not register" || failed["provider"] != "k8s" {
		t.Errorf("failed worker = %v", failed)
	}

	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{w3.ID, w2.ID, w1.ID}}, // newest first
		{"?state=ready,failed", []string{w3.ID, w2.ID}},
		{"?state=ready&state=provisioning", []string{w2.ID, w1.ID}},
		{"?provider=docker", []string{w2.ID, w1.ID}},
		{"?provider=docker&state=failed", []string{}},
		{"?state=", []string{w3.ID, w2.ID, w1.ID}},
	}
	for _, tt := range tests {
		if got := ids("/api/v1/workers" + tt.query); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.query, got, tt.want)
		}
	}

	var first page
	b.do(t, "GET", "/api/v1/workers?limit=2", b.viewer, nil).want(t, 200).json(t, &first)
	if len(first.Items) != 2 || first.Next == "" {
		t.Fatalf("first page = %+v", first)
	}
	if got := ids("/api/v1/workers?limit=2&cursor=" + first.Next); !reflect.DeepEqual(got, []string{w1.ID}) {
		t.Errorf("second page = %v", got)
	}

	msg, _ := b.do(t, "GET", "/api/v1/workers?state=ready,lost", b.viewer, nil).wantError(t, 400, "invalid_request")
	if msg != `state "lost" is not one of provisioning, ready, terminating, terminated, failed` {
		t.Errorf("message %q", msg)
	}
	b.do(t, "GET", "/api/v1/workers?limit=0", b.viewer, nil).wantError(t, 400, "invalid_request")
	b.do(t, "GET", "/api/v1/workers", "", nil).wantError(t, 401, "unauthorized")
}

func TestProviders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if got := string(b.do(t, "GET", "/api/v1/providers", b.viewer, nil).want(t, 200).body); got != `{"items":[]}`+"\n" {
		t.Errorf("providers without any configured = %s", got)
	}
	b.do(t, "GET", "/api/v1/providers", "", nil).wantError(t, 401, "unauthorized")

	b = setupWith(t, options{providers: []provider.Provider{
		&fakeProvider{name: "docker", capacity: provider.Capacity{CPUs: 8, MemoryBytes: 16 << 30, Workers: 2}},
		&fakeProvider{name: "k8s", health: errors.New("cluster unreachable"), capacityErr: errors.New("no nodes")},
	}})
	b.addWorker(t, store.Worker{Provider: "docker"})
	b.addWorker(t, store.Worker{Provider: "docker", State: store.WorkerReady})
	b.addWorker(t, store.Worker{Provider: "docker", State: store.WorkerReady})
	b.addWorker(t, store.Worker{Provider: "k8s", State: store.WorkerFailed})
	b.addWorker(t, store.Worker{Provider: "gone"}) // of a provider no longer configured

	var got struct{ Items []map[string]any }
	b.do(t, "GET", "/api/v1/providers", b.viewer, nil).want(t, 200).json(t, &got)
	want := []map[string]any{
		{
			"name": "docker", "healthy": true,
			"capacity": map[string]any{"cpus": 8.0, "memory_bytes": float64(16 << 30), "workers": 2.0},
			"workers":  map[string]any{"provisioning": 1.0, "ready": 2.0, "terminating": 0.0, "terminated": 0.0, "failed": 0.0},
		},
		{
			"name": "k8s", "healthy": false, "error": "cluster unreachable", "capacity_error": "no nodes",
			"workers": map[string]any{"provisioning": 0.0, "ready": 0.0, "terminating": 0.0, "terminated": 0.0, "failed": 1.0},
		},
	}
	if !reflect.DeepEqual(got.Items, want) {
		t.Errorf("providers\n got %v\nwant %v", got.Items, want)
	}
}
