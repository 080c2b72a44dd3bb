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
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/spec"
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
	Lease time.Duration
	// AgentTimeout is the silence after which Sweep finds an agent lost;
	// 0: never (its jobs' leases expire instead).
	AgentTimeout time.Duration
	Logger       *slog.Logger
}

// SecretResolver finds the value of a secret reference for a run of
// pipelineID. ok is false when there is no such secret.
type SecretResolver interface {
	Resolve(ctx context.Context, pipelineID string, ref spec.SecretRef) (value string, ok bool, err error)
}

// Publisher publishes a message on a subject, without waiting.
type Publisher interface {
	Publish(subject string, payload []byte)
}

// Service is the control plane's orchestration. Its methods are safe for
// concurrent use.
type Service struct {
	store        store.Store
	secrets      SecretResolver
	live         Publisher
	lease        time.Duration
	agentTimeout time.Duration
	started      time.Time
	log          *slog.Logger

	runs  compiledCache
	needs needCache

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
		agentTimeout: cfg.AgentTimeout, started: time.Now(),
		runs:    compiledCache{m: map[string]*plan.Run{}},
		needs:   needCache{m: map[string]Need{}},
		cancels: map[string]map[int]func(string){},
	}
}

// TriggerRequest asks for a run.
type TriggerRequest struct {
	Branch, SHA, Ref, Event string
	Variables               map[string]string
	Actor                   string
}

// compiledCache keeps compiled runs in memory after their first use: they
// never change.
type compiledCache struct {
	mu sync.Mutex
	m  map[string]*plan.Run // by run ID
}

// compiled returns run r's compiled run, decoding it on first use. The
// store keeps it in the run's Trigger.
func (s *Service) compiled(r store.Run) (*plan.Run, error) {
	s.runs.mu.Lock()
	c, ok := s.runs.m[r.ID]
	s.runs.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := plan.Decode(r.Trigger)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", r.ID, err)
	}
	s.runs.mu.Lock()
	if len(s.runs.m) > 10000 { // a crude bound: runs are decoded again on demand
		clear(s.runs.m)
	}
	s.runs.m[r.ID] = c
	s.runs.mu.Unlock()
	return c, nil
}

// forget drops a finished run's compiled run.
func (s *Service) forget(runID string) {
	s.runs.mu.Lock()
	delete(s.runs.m, runID)
	s.runs.mu.Unlock()
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

// jobState maps a runner status to the job's final state. A job skipped by
// its own condition succeeded: its stage is skipped (stageStatus).
func jobState(st spec.Status) store.JobState {
	switch st {
	case spec.StatusSuccess, spec.StatusSkipped:
		return store.JobSucceeded
	case spec.StatusTimeout:
		return store.JobTimeout
	case spec.StatusCancelled:
		return store.JobCancelled
	}
	return store.JobFailed
}

// stageStatus maps a job's final state to its stage's status.
func stageStatus(s store.JobState) spec.Status {
	switch s {
	case store.JobSucceeded:
		return spec.StatusSuccess
	case store.JobTimeout:
		return spec.StatusTimeout
	case store.JobCancelled:
		return spec.StatusCancelled
	}
	return spec.StatusFailure
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
