// Command oxide-server is Oxide's control plane: the REST and WebSocket
// API, the scheduler, the outbox relay to NATS JetStream, and in-process
// workers. With no flags it keeps everything in ./oxide-data (SQLite and an
// in-process NATS); --database-url and --nats-url point it at PostgreSQL
// and a NATS cluster. It is also reached as `oxide server`. Run as
// `oxide-server agent …`, it is the server's own agent, which the server
// starts as its child (internal/agent/agentcmd).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/internal/agent/agentcmd"
	"github.com/oxide-ci/oxide/internal/server"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	agentcmd.RunIfChild(version)
	var cfg server.Config
	var configFile string
	cmd := &cobra.Command{
		Use:           "oxide-server",
		Short:         "Run the Oxide control plane",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := server.Load(cmd.Flags(), configFile); err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return server.Run(ctx, cfg, log, nil)
		},
	}
	cfg.Flags(cmd.Flags())
	cmd.Flags().StringVar(&configFile, "config", "", "read settings from a .toml or .yaml `FILE` (keys are the flag names)")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "oxide-server:", err)
		os.Exit(1)
	}
}
