// Package agentsvc is the server's end of the agent protocol
// (internal/agentrpc): a gRPC service on its own TLS listener.
//
// Register exchanges a one-time bootstrap token and a CSR for a client
// certificate signed by the server's CA (package pki); it needs no client
// certificate. Connect needs one: the agent is the one its certificate
// names, and must still be registered. On a Connect stream the server
// pushes jobs to the agent as soon as they are queued (RunJob), relays
// cancellations (CancelJob) and drains (Drain), and stores what the agent
// reports through the scheduler, acknowledging it (Ack) once stored.
// Silent agents are found lost by the scheduler's sweep
// (scheduler.Service.Sweep), which hands their jobs back to the queue.
//
// # Placement
//
// Whenever jobs are queued or slots are freed, the server places queued
// jobs on the agents connected to it (scheduler.Placer): a job goes to an
// agent that is not draining, has a free slot, the job's labels, OS and
// arch, and the CPUs, memory and GPUs it asks for free (the machine the
// agent reported in its Hello less what its running jobs asked for),
// chosen by Config.Placement. A job that fits no agent stays queued; the
// API says why when no connected agent could ever take it
// (scheduler.Service.WaitingReason). Servers that share a database place
// on their own agents only, and the store's Take gives each job to one.
//
// # Leases
//
// Every job the server pushes is a lease (job, agent, attempt) of the
// store's queue; only the job's current lease may start or finish it, so
// only one attempt's result is ever recorded. An agent that reconnects
// names the leases it still holds in its Hello: those that are no longer
// current are cancelled on the agent (CancelJob). Leases that the store
// gives the agent but that the agent neither reports nor finishes within
// OrphanGrace are failed, so that their jobs run again. A stream that ends
// leaves the agent offline with its leases, for it to reconnect; the
// sweep finds an agent silent for its AgentTimeout, connected or holding
// jobs, lost, and fails the leases it holds (agent_lost): their jobs run
// again elsewhere, or fail once their attempts are spent. An agent that
// disconnected holding nothing stays offline; one that is lost is online
// again when it connects or heartbeats.
//
// # Acknowledgements
//
// Log batches, step updates and results carry a batch_seq; the server
// acknowledges, cumulatively, the ones it processed. A report the store
// rejects for good (a job that does not exist or is not the agent's, a
// malformed update) is logged, dropped and acknowledged; a report it could
// not store (the database failed) ends the stream with Unavailable and is
// not acknowledged, so that the agent sends it again after reconnecting.
// Log lines carry their own sequence numbers, and the store drops those it
// has, so a batch sent twice is stored once.
package agentsvc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// Control is the scheduler as the agent service uses it;
// *scheduler.Service implements it. Its methods are safe for concurrent
// use. OnCancel's fn is called from the goroutine that cancels the job and
// must not block.
type Control interface {
	// Waiting returns up to limit of the jobs agents may take now, in the
	// queue's order after the first offset, with what each needs of its
	// agent.
	Waiting(ctx context.Context, limit, offset int) ([]scheduler.Waiting, error)
	// Need is what a job needs of its agent.
	Need(ctx context.Context, j store.Job) scheduler.Need
	// Take claims a queued job for an agent and returns it ready to run;
	// false if it was taken first or cannot start.
	Take(ctx context.Context, jobID, workerID string) (spec.Assignment, bool, error)
	Start(ctx context.Context, l store.Lease) error
	StepUpdate(ctx context.Context, l store.Lease, index int, r runner.StepResult) error
	AppendLogs(ctx context.Context, jobID, runID string, lines []store.LogLine) error
	Finish(ctx context.Context, l store.Lease, res runner.JobResult) error
	// FailLease requeues an attempt that ended outside the job (or fails
	// the job when its attempts are spent); a stale lease changes nothing.
	FailLease(ctx context.Context, l store.Lease, reason string) error
	// Heartbeat renews a worker's leases and returns the jobs it holds.
	Heartbeat(ctx context.Context, workerID string) ([]string, error)
	// Queued returns a channel closed when jobs are next queued.
	Queued() <-chan struct{}
	OnCancel(jobID string, fn func(reason string)) (unregister func())
}

// Defaults of Config.
const (
	DefaultKeepAlive   = 15 * time.Second
	DefaultPoll        = time.Second
	DefaultOrphanGrace = 10 * time.Second
	helloTimeout       = 30 * time.Second
	sendTimeout        = 5 * time.Second // for the last messages of a stream that ends
	maxRecvMsg         = 4 << 20         // gRPC's default, stated
)

// Config configures a Server.
type Config struct {
	Store   store.Store
	Control Control
	// CA signs the certificates of agents that register and verifies them
	// when they connect. Without its key, Register fails (agents' certificates
	// are made elsewhere).
	CA *pki.CA
	// Certificate is what the listener presents (with its chain).
	Certificate tls.Certificate
	// Live publishes each heartbeat on agent.<id>.heartbeat; nil: none.
	Live scheduler.Publisher
	// KeepAlive is the interval of KeepAlive messages; default 15s.
	KeepAlive time.Duration
	// Poll is how often a session places jobs without being woken (for jobs
	// queued by other servers) and reads the agent's status (drained by
	// another server?); default 1s.
	Poll time.Duration
	// OrphanGrace is how long a lease the store gives an agent may go
	// unreported by it before it is failed; default 10s.
	OrphanGrace time.Duration
	// Placement chooses among the agents that fit a job; default
	// scheduler.BestFit.
	Placement scheduler.Strategy
	// Now is the clock that OrphanGrace is measured with; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Server is the agent service. Use New, then Serve; Stop ends it.
type Server struct {
	agentrpc.UnimplementedAgentServer

	cfg    Config
	store  store.Store
	ctl    Control
	placer *scheduler.Placer
	log    *slog.Logger
	grpc   *grpc.Server

	refusals refusals // refused registrations by peer address

	placeMu    sync.Mutex  // one round of placement at a time
	placeAgain atomic.Bool // place was called during a round

	stopping chan struct{} // closed by Stop
	stopOnce sync.Once

	mu       sync.Mutex
	sessions map[string]*session // by agent ID: the agent's stream to this server
	watched  map[string]*watcher // by job ID: cancellations forwarded to agents
	// statusMu orders the status writes of sessions that open and close,
	// so that an old stream ending does not mark offline an agent that has
	// just connected again.
	statusMu sync.Mutex
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Control == nil || cfg.CA == nil {
		return nil, errors.New("agentsvc: Store, Control and CA are required")
	}
	if len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("agentsvc: no server certificate")
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = DefaultOrphanGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Placement == "" {
		cfg.Placement = scheduler.BestFit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, store: cfg.Store, ctl: cfg.Control, placer: scheduler.NewPlacer(cfg.Placement), log: cfg.Logger,
		stopping: make(chan struct{}),
		sessions: map[string]*session{}, watched: map[string]*watcher{},
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(pki.ServerTLS(cfg.Certificate))),
		// Agents ping to keep NAT mappings open; the server pings to find
		// connections that died without a word.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Thousands of mostly idle streams: small, shared buffers (the
		// default 32 KiB read buffer was half the heap per agent).
		grpc.ReadBufferSize(8<<10),
		grpc.SharedWriteBuffer(true),
		// One bound for every method (gRPC has no other): the agent's log
		// batches stay near 1 MiB, Register's fields are far smaller and
		// are checked before anything is stored.
		grpc.MaxRecvMsgSize(maxRecvMsg),
	)
	agentrpc.RegisterAgentServer(s.grpc, s)
	return s, nil
}

// Serve serves the protocol on ln until Stop; it returns nil after Stop.
func (s *Server) Serve(ln net.Listener) error {
	err := s.grpc.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop ends every agent's stream (the agents reconnect, to this server
// once it runs again or to another) and stops serving: gracefully, unless
// ctx ends first.
func (s *Server) Stop(ctx context.Context) {
	s.stopOnce.Do(func() { close(s.stopping) })
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}

// Drain tells the agent, if it is connected to this server, that it was
// drained (store status draining): it is sent a Drain message and no more
// jobs. Call it after changing the status; sessions also notice within
// Config.Poll.
func (s *Server) Drain(agentID string) {
	s.mu.Lock()
	sess := s.sessions[agentID]
	s.mu.Unlock()
	if sess != nil {
		sess.checkStatus()
	}
}

// Connected returns the IDs of the agents connected to this server.
func (s *Server) Connected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	return ids
}

// CreateToken makes a bootstrap token with which one agent may register
// within ttl (pki.CheckTokenTTL), getting labels (pki.CheckLabels) besides
// those it asks for; createdBy names the maker in the token and the audit
// log. It is how a provider that starts agents gets their tokens; the REST
// API makes them for admins. The token itself is returned only here.
func (s *Server) CreateToken(ctx context.Context, ttl time.Duration, labels []string, createdBy string) (string, store.BootstrapToken, error) {
	if err := pki.CheckTokenTTL(ttl); err != nil {
		return "", store.BootstrapToken{}, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	if err := pki.CheckLabels(labels); err != nil {
		return "", store.BootstrapToken{}, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	token, hash := pki.NewBootstrapToken()
	var t store.BootstrapToken
	err := s.store.InTx(ctx, func(tx store.Tx) (err error) {
		t, err = tx.BootstrapTokens().Create(ctx, store.BootstrapToken{Hash: hash, Labels: labels, CreatedBy: createdBy}, ttl)
		if err != nil {
			return err
		}
		_, err = tx.Audit().Record(ctx, auditEntry(createdBy, "agent_token.create", "bootstrap_token", t.ID, map[string]any{
			"labels": t.Labels, "expires_at": t.ExpiresAt,
		}))
		return err
	})
	if err != nil {
		return "", store.BootstrapToken{}, err
	}
	return token, t, nil
}

// Errors of the service.
var (
	errStopping     = errors.New("the server is shutting down")
	errReplaced     = errors.New("the agent connected again")
	errDeregistered = errors.New("the agent was deregistered")
	errNotYours     = errors.New("the job is not this agent's")
)

// rpcError maps an error to a gRPC status: the one place that does.
func rpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, errStopping), errors.Is(err, errReplaced):
		code = codes.Unavailable
	case errors.Is(err, errDeregistered), errors.Is(err, pki.ErrNoCertificate), errors.Is(err, pki.ErrUntrusted):
		code = codes.Unauthenticated
	case errors.Is(err, pki.ErrNoKey):
		code = codes.FailedPrecondition
	case errors.Is(err, store.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, store.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, store.ErrConflict):
		code = codes.FailedPrecondition
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case transient(err):
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}

// transient reports an error that a retry may not meet: anything but the
// store's verdicts on the request itself.
func transient(err error) bool {
	return err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalid) &&
		!errors.Is(err, store.ErrConflict) && !errors.Is(err, errNotYours)
}

func auditEntry(actor, action, resourceType, resourceID string, details any) store.AuditEntry {
	e := store.AuditEntry{Actor: actor, Action: action, ResourceType: resourceType, ResourceID: resourceID}
	if details != nil {
		e.Details, _ = jsonMarshal(details)
	}
	return e
}
