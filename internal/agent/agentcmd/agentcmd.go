// Package agentcmd is the agent's command line: the oxide-agent binary,
// and the server's executable when a server runs it as its own agent
// (RunIfChild).
package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/oxide-ci/oxide/internal/agent"
)

// ChildArg is the first argument with which a server runs its own
// executable as its agent.
const ChildArg = "agent"

// RunIfChild runs the agent and exits when this process was started as a
// server's own agent (its first argument is ChildArg). The server's
// executable calls it first thing, and so do the test binaries of packages
// that start servers with agents.
func RunIfChild(version string) {
	if len(os.Args) > 1 && os.Args[1] == ChildArg {
		os.Exit(Main(filepath.Base(os.Args[0])+" "+ChildArg, os.Args[2:], version))
	}
}

// Main runs the agent with the command line args (without the program's
// name) and returns its exit code: 0 after a graceful shutdown, 1 when it
// failed, 2 for a usage error.
func Main(name string, args []string, version string) int {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	var (
		cfg       agent.Config
		logLevel  string
		logFormat string
		showVer   bool
	)
	fs.StringVar(&cfg.Server, "server", "", "the server's gRPC address, HOST:PORT (required)")
	fs.StringVar(&cfg.Token, "token", "", "one-time bootstrap token; needed only for the first start")
	fs.StringSliceVar(&cfg.Labels, "labels", nil, "labels of this agent, comma-separated")
	fs.StringVar(&cfg.DataDir, "data-dir", "./oxide-agent-data", "directory for the agent's identity, workspaces and spool")
	fs.IntVar(&cfg.Concurrency, "concurrency", 1, "jobs to run at once")
	fs.StringVar(&cfg.CPUs, "cpus", "", "CPUs to report for jobs (\"4\", \"1500m\"); default: the host's")
	fs.StringVar(&cfg.Memory, "memory", "", "memory to report for jobs (\"16Gi\"); default: the host's")
	fs.StringVar(&cfg.GPUs, "gpus", "", "GPUs to report for jobs; default: the NVIDIA GPUs found")
	fs.StringVar(&cfg.CAFile, "ca", "", "CA certificate (PEM) to verify the server with at registration; default: trust it on first use")
	fs.StringVar(&cfg.Name, "name", "", "name of this agent; default the hostname")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", agent.DefaultHeartbeat, "interval between heartbeats")
	fs.DurationVar(&cfg.Grace, "grace", agent.DefaultGrace, "on shutdown, how long running jobs may go on before they are stopped and handed back")
	fs.BoolVar(&cfg.HostOnly, "host-only", false, "run every job on the host, whatever environment it asks for")
	fs.StringVar(&cfg.Docker, "docker", "auto", "run container jobs on the Docker engine that DOCKER_HOST names: auto (when one answers), on (required) or off")
	fs.BoolVar(&cfg.DockerPrivileged, "docker-privileged", false, "let jobs ask for privileged containers and added capabilities")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json (one object a line)")
	fs.BoolVar(&showVer, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: %s --server HOST:PORT [--token T] [flags]\n\nEvery flag is also an environment variable OXIDE_AGENT_<FLAG> (--data-dir: OXIDE_AGENT_DATA_DIR).\n\n%s", name, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, name+":", err)
		return 2
	}
	if showVer {
		fmt.Println(name, version)
		return 0
	}
	if err := fromEnv(fs); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, name+": --log-level:", err)
		return 2
	}
	opts := &slog.HandlerOptions{Level: level}
	switch logFormat {
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, opts))
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	default:
		fmt.Fprintf(os.Stderr, "%s: --log-format %q: want text or json\n", name, logFormat)
		return 2
	}
	cfg.Version = version
	a, err := agent.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	if err := a.Run(ctx); err != nil {
		cfg.Logger.Error(name, "err", err)
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
