// Package scheduler orchestrates runs on the control plane: a triggered run
// is planned into its DAG of stage instances, each a job in the store's
// queue; jobs whose dependencies are met are queued, workers claim them
// (Claim), report their steps, logs and results (StepUpdate, AppendLogs,
// Finish), and every result advances its run: dependents are queued or
// skipped, matrix fail_fast and max_parallel are honoured, and the run ends
// when its last stage does.
//
// Every decision reads state from the store and writes it back in one
// transaction, so several servers may share one database: a job is claimed
// once (the store's queue guarantees it) and advancing a run twice is
// harmless (queueing a queued job or finishing a finished stage changes
// nothing).
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/store"
)

// Errors for callers of the service; the API maps them to HTTP statuses.
var (
	// ErrInvalid wraps a request the service cannot accept.
	ErrInvalid = store.ErrInvalid
	// ErrConflict wraps a request that contradicts the current state,
	// such as cancelling a finished run.
	ErrConflict = store.ErrConflict
)

// Config configures a Service.
type Config struct {
	Store store.Store
	// Secrets resolves a secret reference of a pipeline on the server
	// (provider oxide); nil resolves none.
	Secrets SecretResolver
	// Live receives log lines as they arrive, for WebSocket clients; nil
	// drops them (they are stored either way).
	Live Publisher
	// Lease is how long a claim lasts without a heartbeat. Default 30s.
	Lease  time.Duration
	Logger *slog.Logger
}

// SecretResolver finds the value of a secret reference for a run of
// pipelineID. ok is false when there is no such secret.
type SecretResolver interface {
	Resolve(ctx context.Context, pipelineID string, ref pipeline.SecretRef) (value string, ok bool, err error)
}

// Publisher publishes a message on a subject, without waiting.
type Publisher interface {
	Publish(subject string, payload []byte)
}

// Service is the control plane's orchestration. Its methods are safe for
// concurrent use.
type Service struct {
	store   store.Store
	secrets SecretResolver
	live    Publisher
	lease   time.Duration
	log     *slog.Logger

	graphs graphCache

	mu         sync.Mutex
	waiters    []chan struct{}                        // workers waiting for queued jobs
	cancels    map[string]map[int]func(reason string) // by job, by registration
	nextCancel int
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{
		store: cfg.Store, secrets: cfg.Secrets, live: cfg.Live, lease: cfg.Lease, log: cfg.Logger,
		graphs:  graphCache{m: map[string]*runGraph{}},
		cancels: map[string]map[int]func(string){},
	}
}

// Trigger is what started a run. It is stored with the run (store.Run's
// Trigger), with the pipeline definition the run executes, so that editing
// the pipeline does not change runs already made.
type Trigger struct {
	Event      string            `json:"event,omitempty"`
	Branch     string            `json:"branch,omitempty"`
	SHA        string            `json:"sha,omitempty"`
	Ref        string            `json:"ref,omitempty"`
	Variables  map[string]string `json:"variables,omitempty"`
	Actor      string            `json:"actor,omitempty"`
	Definition string            `json:"definition"`
	Group      string            `json:"concurrency_group,omitempty"`
}

// TriggerRequest asks for a run.
type TriggerRequest struct {
	Branch, SHA, Ref, Event string
	Variables               map[string]string
	Actor                   string
}

// runGraph is a run's plan, kept in memory after the first use.
type runGraph struct {
	pipeline *pipeline.Pipeline
	graph    *plan.Graph
	trigger  Trigger
}

type graphCache struct {
	mu sync.Mutex
	m  map[string]*runGraph // by run ID
}

// graph returns the plan of run r, parsing its definition on first use.
func (s *Service) graph(r store.Run) (*runGraph, error) {
	s.graphs.mu.Lock()
	g, ok := s.graphs.m[r.ID]
	s.graphs.mu.Unlock()
	if ok {
		return g, nil
	}
	var t Trigger
	if err := json.Unmarshal(r.Trigger, &t); err != nil {
		return nil, fmt.Errorf("run %s: trigger: %w", r.ID, err)
	}
	p, err := pipeline.Parse("pipeline.yaml", []byte(t.Definition))
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", r.ID, err)
	}
	pg, err := plan.Build(p)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", r.ID, err)
	}
	g = &runGraph{pipeline: p, graph: pg, trigger: t}
	s.graphs.mu.Lock()
	if len(s.graphs.m) > 10000 { // a crude bound: runs are re-planned on demand
		clear(s.graphs.m)
	}
	s.graphs.m[r.ID] = g
	s.graphs.mu.Unlock()
	return g, nil
}

// forget drops a finished run's plan.
func (s *Service) forget(runID string) {
	s.graphs.mu.Lock()
	delete(s.graphs.m, runID)
	s.graphs.mu.Unlock()
}

// wake tells waiting workers that jobs were queued.
func (s *Service) wake() {
	s.mu.Lock()
	for _, w := range s.waiters {
		close(w)
	}
	s.waiters = nil
	s.mu.Unlock()
}

// Queued returns a channel closed the next time jobs are queued by this
// process. Workers wait on it between claims, with a poll interval for jobs
// queued by other servers.
func (s *Service) Queued() <-chan struct{} {
	c := make(chan struct{})
	s.mu.Lock()
	s.waiters = append(s.waiters, c)
	s.mu.Unlock()
	return c
}

// OnCancel registers fn to be called when job id is cancelled while a
// worker of this process runs it; the returned func unregisters it (and
// only it: a later attempt's worker may have registered too).
func (s *Service) OnCancel(jobID string, fn func(reason string)) (unregister func()) {
	s.mu.Lock()
	s.nextCancel++
	key := s.nextCancel
	if s.cancels[jobID] == nil {
		s.cancels[jobID] = map[int]func(string){}
	}
	s.cancels[jobID][key] = fn
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.cancels[jobID], key)
		if len(s.cancels[jobID]) == 0 {
			delete(s.cancels, jobID)
		}
		s.mu.Unlock()
	}
}

func (s *Service) notifyCancel(jobID, reason string) {
	s.mu.Lock()
	fns := slices.Collect(maps.Values(s.cancels[jobID]))
	s.mu.Unlock()
	for _, fn := range fns {
		fn(reason)
	}
}

// jobState maps a runner status to the job's final state.
func jobState(st runner.Status) store.JobState {
	switch st {
	case runner.StatusSuccess:
		return store.JobSucceeded
	case runner.StatusTimeout:
		return store.JobTimeout
	case runner.StatusCancelled:
		return store.JobCancelled
	}
	return store.JobFailed
}

// stageStatus maps a job's final state to its stage's status.
func stageStatus(s store.JobState) store.Status {
	switch s {
	case store.JobSucceeded:
		return store.StatusSuccess
	case store.JobTimeout:
		return store.StatusTimeout
	case store.JobCancelled:
		return store.StatusCancelled
	}
	return store.StatusFailure
}

// ignoreConflict treats a conflict as done: another server (or an earlier
// attempt) made the same change first.
func ignoreConflict(err error) error {
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

func now() time.Time { return time.Now().UTC() }
