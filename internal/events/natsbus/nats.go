// Package natsbus carries the server's events over NATS JetStream: the
// embedded NATS server, the OXIDE stream, the outbox relay that publishes
// into it and the subscriptions that WebSocket clients read from it.
//
// It links nats-server and nats.go, so only the server imports it; the event
// types and subjects stay in the light package events.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
)

// The OXIDE stream holds every event for MaxAge and drops a message whose
// Nats-Msg-Id it has stored within DuplicateWindow, so that the relay may
// publish an event again after a crash.
const (
	StreamName      = "OXIDE"
	DuplicateWindow = 2 * time.Minute
	MaxAge          = 7 * 24 * time.Hour
)

// EmbeddedConfig configures the in-process NATS server.
type EmbeddedConfig struct {
	// Port is the loopback TCP port for other clients (the nats CLI, a
	// second process); 0 picks a free one.
	Port int
	// Logger receives the server's log; nil keeps it silent.
	Logger *slog.Logger
}

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a NATS server with JetStream, its store under
// dir/nats, listening on 127.0.0.1 only. It returns once the server accepts
// connections and JetStream has recovered its streams, or fails when that
// takes longer than ctx allows (10 seconds without a deadline).
func StartEmbedded(ctx context.Context, dir string, cfg EmbeddedConfig) (*Embedded, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "oxide",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(dir, "nats"),
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
	})
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if cfg.Logger != nil {
		l := natsLogger{cfg.Logger.With("component", "nats")}
		srv.SetLoggerV2(l, cfg.Logger.Enabled(ctx, slog.LevelDebug), false, false)
	}
	go srv.Start()
	wait := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats server: not ready after %s", wait.Round(time.Millisecond))
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("nats server: JetStream failed to start (see the server log)")
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the server's nats:// URL on the loopback interface.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Connect opens an in-process connection to the server, with Connect's
// defaults.
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	return Connect("", append([]nats.Option{nats.InProcessServer(e.srv)}, opts...)...)
}

// Shutdown stops the server and waits until it has flushed its store.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// Connect connects to the NATS server at url. It reconnects forever after a
// lost connection; opts come after these defaults and override them.
func Connect(url string, opts ...nats.Option) (*nats.Conn, error) {
	defaults := []nats.Option{
		nats.Name("oxide-server"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
	}
	nc, err := nats.Connect(url, append(defaults, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("nats connect: %w", err)
	}
	return nc, nil
}

// EnsureStream creates the OXIDE stream over events.StreamSubjects, or
// updates an existing one to this configuration. replicas is 1 for the
// embedded server; a cluster usually wants 3.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Oxide events, on the subjects of the AsyncAPI channels",
		Subjects:    events.StreamSubjects(),
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      MaxAge,
		Duplicates:  DuplicateWindow,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", StreamName, err)
	}
	return s, nil
}

// natsLogger writes the NATS server's log to slog. Fatalf does not exit:
// StartEmbedded reports a server that failed to start.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Info(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
