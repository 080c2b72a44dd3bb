package api

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/provider"
	"github.com/oxide-ci/oxide/internal/store"
)

// providerTimeout bounds each call of GET /providers to a provider's Health
// and Capacity.
const providerTimeout = 5 * time.Second

// workerStates are the states of elastic workers, in order.
var workerStates = []store.WorkerState{store.WorkerProvisioning, store.WorkerReady, store.WorkerTerminating, store.WorkerTerminated, store.WorkerFailed}

type workerJSON struct {
	ID       string            `json:"id"`
	Provider string            `json:"provider"`
	State    store.WorkerState `json:"state"`
	AgentID  string            `json:"agent_id,omitempty"`
	Handle   string            `json:"handle,omitempty"`
	Error    string            `json:"error,omitempty"`
	// Isolation and Isolated are set for a server's own agent: what keeps
	// its jobs from the server's files, and whether anything does.
	Isolation string    `json:"isolation,omitempty"`
	Isolated  *bool     `json:"isolated,omitempty"`
	Deadline  time.Time `json:"deadline"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func toWorker(w store.Worker) workerJSON {
	out := workerJSON{
		ID: w.ID, Provider: w.Provider, State: w.State, AgentID: w.AgentID, Handle: w.Handle, Error: w.Error,
		Isolation: w.Isolation, Deadline: w.Deadline.UTC(), CreatedAt: w.CreatedAt.UTC(), UpdatedAt: w.UpdatedAt.UTC(),
	}
	if w.Isolation != "" {
		isolated := !strings.HasPrefix(w.Isolation, "none")
		out.Isolated = &isolated
	}
	return out
}

// listWorkers answers the elastic workers of every provider, newest first,
// in the states of ?state= (repeated or comma-separated) and of ?provider=.
func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, offset, err := pageParams(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var states []store.WorkerState
	for _, v := range q["state"] {
		for st := range strings.SplitSeq(v, ",") {
			if st == "" {
				continue
			}
			if !slices.Contains(workerStates, store.WorkerState(st)) {
				return invalidf("state %q is not one of provisioning, ready, terminating, terminated, failed", st)
			}
			states = append(states, store.WorkerState(st))
		}
	}
	all, err := s.store.Workers().List(r.Context(), q.Get("provider"), states...)
	if err != nil {
		return err
	}
	slices.Reverse(all) // the store lists them oldest first
	page, next := paginate(all, limit, offset)
	writeJSON(w, http.StatusOK, list[workerJSON]{Items: mapItems(page, toWorker), Next: next})
	return nil
}

type providerJSON struct {
	Name          string                    `json:"name"`
	Healthy       bool                      `json:"healthy"`
	Error         string                    `json:"error,omitempty"` // why it is unhealthy
	Capacity      *capacityJSON             `json:"capacity,omitempty"`
	CapacityError string                    `json:"capacity_error,omitempty"`
	Workers       map[store.WorkerState]int `json:"workers"` // by state, from the store
}

type capacityJSON struct {
	CPUs        int   `json:"cpus"`
	MemoryBytes int64 `json:"memory_bytes"`
	Workers     int   `json:"workers"` // running, as the provider sees them
}

// listProviders answers the configured providers of elastic workers, in
// their order, each with its health, its capacity and the counts of its
// workers by state. The providers are asked in parallel.
func (s *Server) listProviders(w http.ResponseWriter, r *http.Request, _ *principal) error {
	all, err := s.store.Workers().List(r.Context(), "")
	if err != nil {
		return err
	}
	out := make([]providerJSON, len(s.providers))
	var wg sync.WaitGroup
	for i, p := range s.providers {
		out[i] = providerJSON{Name: p.Name(), Workers: map[store.WorkerState]int{}}
		for _, st := range workerStates {
			out[i].Workers[st] = 0
		}
		for _, wk := range all {
			if wk.Provider == out[i].Name {
				out[i].Workers[wk.State]++
			}
		}
		wg.Go(func() { askProvider(r.Context(), p, &out[i]) })
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, list[providerJSON]{Items: out})
	return nil
}

// askProvider fills in p's health and capacity.
func askProvider(ctx context.Context, p provider.Provider, out *providerJSON) {
	hctx, cancel := context.WithTimeout(ctx, providerTimeout)
	err := p.Health(hctx)
	cancel()
	out.Healthy = err == nil
	if err != nil {
		out.Error = err.Error()
	}
	cctx, cancel := context.WithTimeout(ctx, providerTimeout)
	c, err := p.Capacity(cctx)
	cancel()
	if err != nil {
		out.CapacityError = err.Error()
		return
	}
	out.Capacity = &capacityJSON{CPUs: c.CPUs, MemoryBytes: c.MemoryBytes, Workers: c.Workers}
}
