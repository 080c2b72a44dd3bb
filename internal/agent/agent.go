// Package agent is the Oxide agent: it connects outbound to the server's
// gRPC endpoint (internal/agentrpc), registers once with a bootstrap token
// for a client certificate, then holds a Connect stream over mTLS and runs
// the jobs the server pushes with worker.Worker, the same loop the server
// runs in-process.
//
// The agent never loses what it reports: step updates, log batches and job
// results wait in an outbox (memory, spilling to the data directory) until
// the server acknowledges them, and are sent again after a reconnect. Jobs
// keep running while the connection is down.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/datadir"
	"github.com/oxide-ci/oxide/internal/environment/docker"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/worker"
)

// Defaults of Config.
const (
	DefaultHeartbeat    = 10 * time.Second
	DefaultGrace        = 10 * time.Second
	DefaultKillGrace    = 10 * time.Second
	DefaultFlushTimeout = 5 * time.Second
	DefaultMemoryBuffer = 8 << 20
	defaultSegment      = 4 << 20
	keepaliveTime       = 20 * time.Second
	keepaliveTimeout    = 10 * time.Second
)

// Config configures an Agent.
type Config struct {
	Server  string   // the server's gRPC address, HOST:PORT
	Token   string   // bootstrap token: needed only while DataDir holds no identity
	Labels  []string // added to the token's labels at registration, and announced on connect
	DataDir string   // identity, workspaces and spool
	Name    string   // default: the hostname
	// CAFile verifies the server at registration. Empty: trust the server's
	// certificate on first use. Later connections verify the server with the
	// CA stored at registration.
	CAFile      string
	Concurrency int // jobs at once; default 1
	// CPUs ("2", "500m"), Memory ("16Gi") and GPUs ("1") replace what the
	// agent finds on its host and reports to the server, which places jobs'
	// resources by it; empty: what it finds.
	CPUs, Memory, GPUs string
	Heartbeat          time.Duration // default 10s
	// Grace is how long a shutdown waits for running jobs before it
	// cancels them; default 10s.
	Grace time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL of a cancelled
	// step's processes; default 10s.
	KillGrace time.Duration
	// FlushTimeout is how long a shutdown waits for the server to
	// acknowledge what the agent sent; default 5s.
	FlushTimeout time.Duration
	// MemoryBuffer bounds the unacknowledged messages held in memory; more
	// spill to DataDir/spool. Default 8 MiB.
	MemoryBuffer int64
	// HostOnly runs every job on the host, whatever environment it asks for.
	HostOnly bool
	// Docker says whether container jobs run on the Docker engine that
	// DOCKER_HOST names: auto (default), on (required) or off.
	Docker string
	// DockerPrivileged lets jobs ask for privileged containers and added
	// capabilities.
	DockerPrivileged bool
	Version          string
	Logger           *slog.Logger

	segment int64 // spool file size; tests make it small
}

// Agent runs jobs for a server. Use New, then Run.
type Agent struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and fills its defaults.
func New(cfg Config) (*Agent, error) {
	if cfg.Server == "" {
		return nil, errors.New("agent: no server address")
	}
	if _, err := serverHost(cfg.Server); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("agent: no data directory")
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = abs
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if _, err := measure(cfg); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = DefaultFlushTimeout
	}
	if cfg.MemoryBuffer <= 0 {
		cfg.MemoryBuffer = DefaultMemoryBuffer
	}
	if cfg.segment <= 0 {
		cfg.segment = defaultSegment
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Agent{cfg: cfg, log: cfg.Logger}, nil
}

// Run registers the agent if its data directory holds no identity yet,
// then connects and runs jobs until ctx is done, reconnecting whenever the
// connection breaks. When ctx is done it shuts down gracefully: it takes no
// more jobs and hands back those not started, lets running jobs go on for
// Config.Grace and then cancels them, waits up to Config.FlushTimeout for
// the server to acknowledge what it sent, and returns nil. It returns an
// error only when it cannot start: its data directory cannot be made
// private (datadir.Secure), or it has no identity and registration failed.
// Another agent running on the same data directory makes it wait.
func (a *Agent) Run(ctx context.Context) error {
	cfg := a.cfg
	if err := datadir.Secure(cfg.DataDir, a.log); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	release, err := lockDataDir(cfg.DataDir, a.log)
	if err != nil {
		return err
	}
	defer release()
	id, err := a.identity(ctx)
	if err != nil {
		return err
	}
	log := a.log.With("agent_id", id.AgentID)
	tc, err := id.tlsConfig(cfg.Server)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(cfg.Server,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		// Pings find a connection that died without a word (and keep NAT
		// mappings open); the server allows one every 5s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		// Redial on the agent's own schedule: gRPC's default backoff grows
		// to 120 s, which would keep an agent away from a restarted server
		// past its jobs' leases.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: minBackoff, Multiplier: 2, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return err
	}
	defer cc.Close()

	// A new process holds no job: what a previous one left is of no use.
	workspaces := filepath.Join(cfg.DataDir, "workspaces")
	if err := os.RemoveAll(workspaces); err != nil {
		return err
	}
	out, err := newOutbox(filepath.Join(cfg.DataDir, "spool"), cfg.MemoryBuffer, cfg.segment,
		uint64(time.Now().UnixNano()), func(err error) { log.Error("outbox", "err", err) })
	if err != nil {
		return err
	}
	defer out.close()
	labels := slices.Clone(id.Labels)
	for _, l := range cfg.Labels {
		if !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
	}
	w := &worker.Worker{
		ID: id.AgentID, Dir: workspaces, Grace: cfg.KillGrace, HostOnly: cfg.HostOnly, Logger: log,
		Runner: spec.Runner{Name: cfg.Name, OS: runtime.GOOS, Arch: runtime.GOARCH},
	}
	scratch := filepath.Join(cfg.DataDir, "tmp")
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return err
	}
	eng, err := docker.Open(ctx, cfg.Docker, docker.Options{
		Owner: "agent:" + id.AgentID, Grace: cfg.KillGrace, AllowPrivileged: cfg.DockerPrivileged, TempDir: scratch,
	}, log)
	if err != nil {
		return err
	}
	if eng != nil {
		defer eng.Close()
		w.Containers = eng
	}
	// Pushed jobs run at once, each on its own goroutine, until the
	// shutdown cancels what is left of them.
	workCtx, stopWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopWork(nil)
	var jobs sync.WaitGroup
	beat := make(chan struct{}, 1)
	ctl := newControl(out, log, func() {
		select {
		case beat <- struct{}{}:
		default:
		}
	}, cfg.Concurrency, func(a spec.Assignment) { jobs.Go(func() { w.Execute(workCtx, a) }) })
	w.Control = ctl
	c := &conn{
		cfg: cfg, client: agentrpc.NewAgentClient(cc), ctl: ctl, out: out, log: log, labels: labels,
		stats: newHostStats(cfg.DataDir), beat: beat,
	}
	c.machine, _ = measure(cfg) // checked by New
	// The connection outlives ctx: the shutdown reports over it.
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	connDone := make(chan struct{})
	go func() { c.loop(connCtx); close(connDone) }()
	log.Info("oxide-agent started", "server", cfg.Server, "labels", labels, "concurrency", cfg.Concurrency,
		"cpu_millis", c.machine.cpuMillis, "memory_bytes", c.machine.memory, "gpus", c.machine.gpus)

	<-ctx.Done()
	log.Info("oxide-agent shutting down", "grace", cfg.Grace)
	ctl.drain(true)
	if !waitUntil(cfg.Grace, ctl.idle) {
		log.Warn("cancelling the jobs still running")
	}
	stopWork(errShutdown)
	jobs.Wait()
	if !waitUntil(cfg.FlushTimeout, func() bool { return out.len() == 0 }) {
		log.Warn("the server did not acknowledge everything", "messages", out.len())
	}
	stopConn()
	<-connDone
	log.Info("oxide-agent stopped")
	return nil
}

// identity loads the agent's identity, or registers for one.
func (a *Agent) identity(ctx context.Context) (*Identity, error) {
	cfg := a.cfg
	id, err := LoadIdentity(cfg.DataDir)
	if err == nil {
		if cfg.Token != "" {
			a.log.Info("already registered: the bootstrap token is not used", "agent_id", id.AgentID)
		}
		return id, nil
	}
	if !errors.Is(err, ErrNotRegistered) {
		return nil, fmt.Errorf("identity in %s: %w", cfg.DataDir, err)
	}
	id, err = Register(ctx, cfg.Server, cfg.Token, cfg.Labels, cfg.DataDir, RegisterOptions{
		CAFile: cfg.CAFile, Name: cfg.Name, Capacity: cfg.Concurrency, Version: cfg.Version,
		Logf: func(format string, args ...any) { a.log.Warn(fmt.Sprintf(format, args...)) },
	})
	if err != nil {
		return nil, err
	}
	a.log.Info("registered", "agent_id", id.AgentID, "labels", id.Labels, "os", runtime.GOOS, "arch", runtime.GOARCH)
	return id, nil
}

// waitUntil polls cond until it holds (true) or d has passed (false).
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
