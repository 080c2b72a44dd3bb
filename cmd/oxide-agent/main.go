// Command oxide-agent runs jobs for an Oxide server: it connects outbound
// to the server's gRPC address, registers once with a bootstrap token, and
// runs the jobs the server pushes. `oxide agent …` runs it.
//
//	oxide-agent --server HOST:PORT --token T --labels a,b --data-dir D --concurrency N
//
// Every flag is also an environment variable: --data-dir is
// OXIDE_AGENT_DATA_DIR. SIGTERM or SIGINT shuts it down gracefully (exit
// 0); a second signal ends it at once.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/oxide-ci/oxide/internal/agent"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := pflag.NewFlagSet("oxide-agent", pflag.ContinueOnError)
	fs.SortFlags = false
	var (
		cfg      agent.Config
		logLevel string
		showVer  bool
	)
	fs.StringVar(&cfg.Server, "server", "", "the server's gRPC address, HOST:PORT (required)")
	fs.StringVar(&cfg.Token, "token", "", "one-time bootstrap token; needed only for the first start")
	fs.StringSliceVar(&cfg.Labels, "labels", nil, "labels of this agent, comma-separated")
	fs.StringVar(&cfg.DataDir, "data-dir", "./oxide-agent-data", "directory for the agent's identity, workspaces and spool")
	fs.IntVar(&cfg.Concurrency, "concurrency", 1, "jobs to run at once")
	fs.StringVar(&cfg.CAFile, "ca", "", "CA certificate (PEM) to verify the server with at registration; default: trust it on first use")
	fs.StringVar(&cfg.Name, "name", "", "name of this agent; default the hostname")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", agent.DefaultHeartbeat, "interval between heartbeats")
	fs.DurationVar(&cfg.Grace, "grace", agent.DefaultGrace, "on shutdown, how long running jobs may go on before they are stopped and handed back")
	fs.BoolVar(&cfg.HostOnly, "host-only", false, "run every job on the host, whatever environment it asks for")
	fs.StringVar(&cfg.Docker, "docker", "auto", "run container jobs on the Docker engine that DOCKER_HOST names: auto (when one answers), on (required) or off")
	fs.BoolVar(&cfg.DockerPrivileged, "docker-privileged", false, "let jobs ask for privileged containers and added capabilities")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&showVer, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: oxide-agent --server HOST:PORT [--token T] [flags]\n\nEvery flag is also an environment variable OXIDE_AGENT_<FLAG> (--data-dir: OXIDE_AGENT_DATA_DIR).\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "oxide-agent:", err)
		return 2
	}
	if showVer {
		fmt.Println("oxide-agent", version)
		return 0
	}
	if err := fromEnv(fs); err != nil {
		fmt.Fprintln(os.Stderr, "oxide-agent:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "oxide-agent: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "oxide-agent: --log-level:", err)
		return 2
	}
	cfg.Version = version
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	a, err := agent.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "oxide-agent:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	if err := a.Run(ctx); err != nil {
		cfg.Logger.Error("oxide-agent", "err", err)
		return 1
	}
	return 0
}

// fromEnv sets the flags not given on the command line from OXIDE_AGENT_*
// environment variables.
func fromEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		name := "OXIDE_AGENT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	return errors.Join(errs...)
}
