// Package server wires the control plane together: the store (SQLite in
// the data directory, or PostgreSQL), NATS JetStream (in-process, or an
// external cluster) fed by the outbox relay, the scheduler (whose sweeps
// also find lost agents), the REST/WebSocket API, the agents' gRPC
// endpoint with its CA, and the server's own agent (a child process, see
// ownagent.go). Run starts them all and stops them in order on shutdown.
package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/datadir"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/provider"
	dockerprovider "github.com/oxide-ci/oxide/internal/provider/docker"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/server/agentsvc"
	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting requests, lets the in-flight ones end, stops its own agent
// (which hands its jobs back), publishes what the outbox holds, and closes
// the database. ready, if not nil, is called with the HTTP address once the
// server answers. With cfg.Agents > 0 the server runs its own executable
// as its agent: a program that calls Run must call agentcmd.RunIfChild
// first.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(addr string)) error {
	if cfg.Agents > 0 && cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0" // for the own agent only
	}
	placement, err := scheduler.ParseStrategy(cfg.Placement)
	if err != nil {
		return fmt.Errorf("--placement: %w", err)
	}
	cfg.Placement = string(placement)
	for _, name := range cfg.AgentEnv {
		if strings.HasPrefix(name, "OXIDE_") {
			return fmt.Errorf("--agent-env %s: the server's OXIDE_ settings and keys stay with it", name)
		}
	}
	if err := datadir.Secure(cfg.DataDir, log); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	nc, shutdownNATS, err := connectNATS(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer shutdownNATS()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := natsbus.EnsureStream(ctx, js, 1); err != nil {
		return fmt.Errorf("nats stream: %w", err)
	}
	relay := natsbus.NewRelay(js, outbox{st}, natsbus.RelayConfig{Logger: log})
	if err := relay.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer relay.Stop()
	defer drainOutbox(st, relay, 10*time.Second)

	key, err := secrets.LoadKey(cfg.DataDir, os.Getenv("OXIDE_SECRET_KEY"))
	if err != nil {
		return err
	}
	box, err := secrets.NewBox(key)
	if err != nil {
		return err
	}
	svc := scheduler.New(scheduler.Config{
		Store: st, Secrets: secretResolver{st, box}, Live: livePublisher{nc}, Lease: cfg.Lease, AgentTimeout: cfg.AgentTimeout,
		Logger: log,
	})
	toks := tokens{st}
	if tok, err := api.Bootstrap(ctx, toks, cfg.DataDir, os.Getenv("OXIDE_ADMIN_TOKEN")); err != nil {
		return err
	} else if tok != "" {
		fmt.Fprintf(os.Stderr, "oxide-server: the admin token is %s (also in %s)\n", tok, filepath.Join(cfg.DataDir, api.AdminTokenFile))
	}
	agents, ca, err := newAgentService(cfg, st, svc, livePublisher{nc}, log)
	if err != nil {
		return err
	}
	elastic, closeProvider, err := newProvider(ctx, cfg, agents, log)
	if err != nil {
		return err
	}
	defer closeProvider()
	var providers []provider.Provider
	if elastic != nil {
		providers = append(providers, elastic)
	}
	apiServer := api.New(api.Config{
		Store: st, Control: control{svc, agents}, Tokens: toks, Secrets: box, JetStream: js, Logger: log, Providers: providers,
		Ready: func(ctx context.Context) error {
			if nc.Status() != nats.CONNECTED {
				return errors.New("nats is not connected")
			}
			_, err := st.Jobs().Count(ctx, store.JobQueued)
			return err
		},
	})

	cert, err := apiCertificate(cfg)
	if err != nil {
		return err
	}
	// The connection cap stays under the limit of open files, which the
	// database, NATS and the agents share: refusing clients beats failing
	// to open a file.
	if files, err := raiseFileLimit(); err != nil {
		log.Warn("cannot raise the limit of open files", "err", err)
	} else if fit := int(min(files, 1<<30)) - reservedFiles; cfg.HTTPMaxConns == 0 || cfg.HTTPMaxConns > fit {
		log.Warn("the limit of open files caps the API's connections lower than --http-max-conns", "files", files, "http_max_conns", cfg.HTTPMaxConns, "cap", fit)
		cfg.HTTPMaxConns = max(fit, 64)
	}
	ln, err := listenHTTP(cfg)
	if err != nil {
		return err
	}
	httpServer := newHTTPServer(apiServer, cert, log)
	serveErr := make(chan error, 1)
	if cert != nil {
		hupCtx, stopHUP := context.WithCancel(ctx)
		defer stopHUP()
		reloadOnHangup(hupCtx, cert, log)
		go func() { serveErr <- httpServer.ServeTLS(ln, "", "") }()
	} else {
		if beyondLoopback(ln.Addr().String()) {
			log.Warn("the API is plain HTTP beyond loopback: tokens and secrets cross the network in clear; give --tls-cert and --tls-key", "http", ln.Addr().String())
		}
		go func() { serveErr <- httpServer.Serve(ln) }()
	}

	if err := recoverLeases(ctx, st, cfg.Lease); err != nil {
		httpServer.Close()
		return err
	}
	// The scheduler's sweeps (which find lost agents too) stop with work.
	work, stopWork := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(work, time.Second); close(done) }()
	grpcAddr, grpcErr := "", make(chan error, 1)
	if agents != nil {
		gln, err := net.Listen("tcp", cfg.GRPCAddr)
		if err != nil {
			stopWork()
			<-done
			httpServer.Close()
			return fmt.Errorf("--grpc-addr: %w", err)
		}
		grpcAddr = gln.Addr().String()
		go func() { grpcErr <- agents.Serve(gln) }()
	}
	stopOwnAgent := func() {}
	if cfg.Agents > 0 {
		var online <-chan struct{}
		if stopOwnAgent, online, err = startOwnAgent(ctx, cfg, st, agents, ca, grpcAddr, log); err != nil {
			stopWork()
			<-done
			agents.Stop(ctx)
			httpServer.Close()
			return err
		}
		// Ready means ready to run jobs: wait a little for the own agent.
		select {
		case <-online:
		case <-time.After(ownOnlineWait):
			log.Warn("the server's own agent has not connected yet", "after", ownOnlineWait)
		case <-ctx.Done():
		}
	}
	var scaling sync.WaitGroup
	if elastic != nil {
		scaler := &provider.Autoscaler{
			Store: st, Control: control{svc, agents}, Provider: elastic, Server: grpcAddr, Labels: cfg.AgentLabels,
			Min: cfg.WorkersMin, Max: cfg.WorkersMax, ScaleFactor: cfg.ScaleFactor,
			Idle: cfg.WorkerIdle, Register: cfg.WorkerRegister, Logger: log,
		}
		scaling.Go(func() { scaler.Run(work, svc.Queued) })
	}
	log.Info("oxide-server ready", "http", ln.Addr().String(), "tls", cert != nil, "grpc", grpcAddr, "data_dir", cfg.DataDir, "agents", cfg.Agents)
	if ready != nil {
		ready(ln.Addr().String())
	}

	var failed error
	select {
	case <-ctx.Done():
	case failed = <-serveErr:
	case failed = <-grpcErr:
		failed = fmt.Errorf("agent endpoint: %w", failed)
	}
	log.Info("oxide-server shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	httpServer.Shutdown(shutdownCtx)
	apiServer.Shutdown(shutdownCtx)
	stopOwnAgent() // while the endpoint takes what it hands back
	if agents != nil {
		// Agents keep their jobs running and reconnect when a server is back.
		agents.Stop(shutdownCtx)
	}
	stopWork()
	scaling.Wait()
	<-done
	return failed
}

func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if cfg.DatabaseURL != "" {
		if !strings.HasPrefix(cfg.DatabaseURL, "postgres://") && !strings.HasPrefix(cfg.DatabaseURL, "postgresql://") {
			return nil, fmt.Errorf("--database-url: want postgres://…, got %q", cfg.DatabaseURL)
		}
		return postgres.Open(ctx, cfg.DatabaseURL)
	}
	path := filepath.Join(cfg.DataDir, "oxide.db")
	// SQLite makes a new database 0644, and its -wal and -shm with the
	// database's mode: a new database is made private first.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, datadir.FileMode)
	if err != nil {
		return nil, err
	}
	f.Close()
	return sqlite.Open(ctx, path)
}

// connectNATS connects to the configured NATS, or starts one in-process.
func connectNATS(ctx context.Context, cfg Config, log *slog.Logger) (*nats.Conn, func(), error) {
	if cfg.NATSURL != "" {
		nc, err := natsbus.Connect(cfg.NATSURL)
		if err != nil {
			return nil, nil, err
		}
		return nc, func() { closeConn(nc) }, nil
	}
	emb, err := natsbus.StartEmbedded(ctx, cfg.DataDir, natsbus.EmbeddedConfig{})
	if err != nil {
		return nil, nil, err
	}
	nc, err := emb.Connect()
	if err != nil {
		emb.Shutdown()
		return nil, nil, err
	}
	return nc, func() { closeConn(nc); emb.Shutdown() }, nil
}

// closeConn drains nc and waits, a few seconds at most, until it is closed.
func closeConn(nc *nats.Conn) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		nc.Close()
	}
}

// drainOutbox lets the relay publish what the outbox still holds, for at
// most timeout: the last state changes reach NATS before the server stops.
func drainOutbox(st store.Store, relay *natsbus.Relay, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		pending, err := st.Outbox().Pending(ctx, 1)
		if err != nil || len(pending) == 0 {
			return
		}
		relay.Notify()
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// recoverLeases renews, before the first sweep, the leases of the jobs
// that agents held when the server last stopped, so that each agent has a
// whole lease to reconnect and report the job it kept running.
func recoverLeases(ctx context.Context, st store.Store, lease time.Duration) error {
	agents, err := st.Agents().List(ctx)
	if err != nil {
		return err
	}
	for _, a := range agents {
		if _, err := st.Jobs().Extend(ctx, a.ID, lease); err != nil {
			return err
		}
	}
	return nil
}

// livePublisher publishes log lines on core NATS; WebSocket clients that
// follow a run see them at once.
type livePublisher struct{ nc *nats.Conn }

func (p livePublisher) Publish(subject string, payload []byte) { p.nc.Publish(subject, payload) }

// stableID is a UUID made from the data directory and a name: the same
// for a server across restarts.
func stableID(dataDir, name string) string {
	abs, _ := filepath.Abs(dataDir)
	h := sha256.Sum256([]byte(abs + "\x00" + name))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// newAgentService makes the agents' gRPC service (nil when cfg.GRPCAddr is
// empty) with its PKI: the CA from --tls-ca or the data directory, and the
// listener's certificate from --tls-cert/--tls-key or issued by the CA.
func newAgentService(cfg Config, st store.Store, svc *scheduler.Service, live scheduler.Publisher, log *slog.Logger) (*agentsvc.Server, *pki.CA, error) {
	if cfg.GRPCAddr == "" {
		return nil, nil, nil
	}
	var ca *pki.CA
	var err error
	if cfg.TLSCA != "" {
		ca, err = pki.LoadCA(cfg.TLSCA, "")
	} else {
		ca, err = pki.LoadOrCreateCA(cfg.DataDir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-ca: %w", err)
	}
	var cert tls.Certificate
	switch {
	case cfg.TLSCert != "" && cfg.TLSKey != "":
		if cert, err = tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
		}
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		return nil, nil, errors.New("--tls-cert and --tls-key go together")
	default:
		if cert, err = ca.IssueServerCert(serverHosts(cfg.GRPCAddr)); err != nil {
			return nil, nil, fmt.Errorf("the agent endpoint's certificate: %w (give --tls-cert and --tls-key)", err)
		}
	}
	if ca.Key == nil {
		log.Warn("the CA has no private key: agents cannot register with this server", "tls_ca", cfg.TLSCA)
	}
	log.Info("agent endpoint", "grpc", cfg.GRPCAddr, "ca_fingerprint", ca.Fingerprint())
	agents, err := agentsvc.New(agentsvc.Config{
		Store: st, Control: svc, CA: ca, Certificate: cert, Live: live, Logger: log,
		Placement: scheduler.Strategy(cfg.Placement),
	})
	return agents, ca, err
}

// serverHosts are the names of the agent endpoint's certificate: loopback,
// the host name, and the host of addr, or every address of the machine's
// interfaces when addr listens on all of them.
func serverHosts(addr string) []string {
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					hosts = append(hosts, n.IP.String())
				}
			}
		}
		return hosts
	}
	return append(hosts, host)
}

// control is the API's control plane: the scheduler, with drains relayed
// to the agent's stream when it is connected here.
type control struct {
	*scheduler.Service
	agents *agentsvc.Server // nil: no agent endpoint
}

func (c control) DrainAgent(ctx context.Context, id, actor string) (store.Agent, error) {
	a, err := c.Service.DrainAgent(ctx, id, actor)
	if err == nil && c.agents != nil {
		c.agents.Drain(id)
	}
	return a, err
}

// CreateToken makes the bootstrap token of an elastic worker's agent.
func (c control) CreateToken(ctx context.Context, ttl time.Duration, labels []string, createdBy string) (string, store.BootstrapToken, error) {
	return c.agents.CreateToken(ctx, ttl, labels, createdBy)
}

// newProvider returns the provider of elastic workers that cfg names (nil
// when none), and a function that closes its connections.
func newProvider(ctx context.Context, cfg Config, agents *agentsvc.Server, log *slog.Logger) (provider.Provider, func(), error) {
	switch {
	case cfg.Provider == "":
		return nil, func() {}, nil
	case cfg.Provider != "docker":
		return nil, nil, fmt.Errorf("--provider %q: want docker", cfg.Provider)
	case agents == nil:
		return nil, nil, errors.New("--provider needs the agents' endpoint: set --grpc-addr")
	}
	cli, err := dockerprovider.Connect(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("--provider docker: %w", err)
	}
	dataRoot, err := filepath.Abs(filepath.Join(cfg.DataDir, "workers"))
	if err != nil {
		cli.Close()
		return nil, nil, err
	}
	return dockerprovider.New(cli, dockerprovider.Config{
		Image: cfg.WorkerImage, Network: cfg.WorkerNetwork, Logger: log,
		Pool:         cmp.Or(cfg.WorkerPool, stableID(cfg.DataDir, "worker-pool")),
		DockerSocket: cfg.WorkerDockerSocket, DataRoot: dataRoot,
	}), func() { cli.Close() }, nil
}
