// Package server wires the control plane together: the store (SQLite in
// the data directory, or PostgreSQL), NATS JetStream (in-process, or an
// external cluster) fed by the outbox relay, the scheduler, in-process
// workers, and the REST/WebSocket API. Run starts them all and stops them
// in order on shutdown.
package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events/natsbus"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
	"github.com/oxide-ci/oxide/internal/worker"
)

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting requests, lets the in-flight ones and the workers' jobs end,
// publishes what the outbox holds, and closes the database. ready, if not
// nil, is called with the HTTP address once the server answers.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(addr string)) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
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
		Store: st, Secrets: secretResolver{st, box}, Live: livePublisher{nc}, Lease: cfg.Lease, Logger: log,
	})
	toks := tokens{st}
	if tok, err := api.Bootstrap(ctx, toks, cfg.DataDir, os.Getenv("OXIDE_ADMIN_TOKEN")); err != nil {
		return err
	} else if tok != "" {
		fmt.Fprintf(os.Stderr, "oxide-server: the admin token is %s (also in %s)\n", tok, filepath.Join(cfg.DataDir, api.AdminTokenFile))
	}
	apiServer := api.New(api.Config{
		Store: st, Control: svc, Tokens: toks, Secrets: box, JetStream: js, Logger: log,
		Ready: func(ctx context.Context) error {
			if nc.Status() != nats.CONNECTED {
				return errors.New("nats is not connected")
			}
			_, err := st.Jobs().Count(ctx, store.JobQueued)
			return err
		},
	})

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	httpServer := &http.Server{Handler: apiServer, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpServer.Serve(ln) }()

	// The scheduler's sweeps and the in-process workers stop with work.
	work, stopWork := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(work, time.Second); close(done) }()
	workersDone := startWorkers(work, cfg, svc, log)
	log.Info("oxide-server ready", "http", ln.Addr().String(), "data_dir", cfg.DataDir, "agents", cfg.Agents)
	if ready != nil {
		ready(ln.Addr().String())
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopWork()
		return err
	}
	log.Info("oxide-server shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	httpServer.Shutdown(shutdownCtx)
	apiServer.Shutdown(shutdownCtx)
	stopWork()
	<-workersDone
	<-done
	return nil
}

func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if cfg.DatabaseURL != "" {
		if !strings.HasPrefix(cfg.DatabaseURL, "postgres://") && !strings.HasPrefix(cfg.DatabaseURL, "postgresql://") {
			return nil, fmt.Errorf("--database-url: want postgres://…, got %q", cfg.DatabaseURL)
		}
		return postgres.Open(ctx, cfg.DatabaseURL)
	}
	return sqlite.Open(ctx, filepath.Join(cfg.DataDir, "oxide.db"))
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

// startWorkers runs cfg.Agents workers in this process; the channel closes
// when they have all stopped.
func startWorkers(ctx context.Context, cfg Config, svc *scheduler.Service, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	host, _ := os.Hostname()
	finished := make(chan struct{}, max(cfg.Agents, 1))
	for i := range cfg.Agents {
		name := fmt.Sprintf("%s-local-%d", host, i+1)
		w := &worker.Worker{
			ID: stableID(cfg.DataDir, name), Labels: cfg.AgentLabels, Concurrency: 1,
			Dir: filepath.Join(cfg.DataDir, "workspaces"), HostOnly: cfg.HostOnly, Control: svc,
			Heartbeat: cfg.Lease / 3, Logger: log.With("worker", i+1),
		}
		_, err := svc.Register(ctx, store.Agent{
			ID: w.ID, Name: name, Labels: w.Labels, Capacity: w.Concurrency, Version: "in-process",
			OS: runtime.GOOS, Arch: runtime.GOARCH,
		})
		if err != nil {
			log.Error("register in-process worker", "err", err)
		}
		go func() { w.Run(ctx); finished <- struct{}{} }()
	}
	go func() {
		for range cfg.Agents {
			<-finished
		}
		close(done)
	}()
	return done
}

// livePublisher publishes log lines on core NATS; WebSocket clients that
// follow a run see them at once.
type livePublisher struct{ nc *nats.Conn }

func (p livePublisher) Publish(subject string, payload []byte) { p.nc.Publish(subject, payload) }

// stableID is a UUID made from the data directory and a name, so that an
// in-process worker keeps its agent identity across restarts.
func stableID(dataDir, name string) string {
	abs, _ := filepath.Abs(dataDir)
	h := sha256.Sum256([]byte(abs + "\x00" + name))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
