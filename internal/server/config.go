package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/goccy/go-yaml"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/spf13/pflag"
)

// Config is the server's configuration. Every field is a flag (--data-dir),
// an environment variable (OXIDE_DATA_DIR) and a key of the config file
// (data-dir), in that order of precedence.
type Config struct {
	DataDir  string
	HTTPAddr string
	// HTTPMaxConns and HTTPMaxConnsPerIP cap the API's open connections,
	// in all and from one client IP; 0: no cap.
	HTTPMaxConns      int
	HTTPMaxConnsPerIP int
	GRPCAddr          string
	DatabaseURL       string // postgres://…; empty: SQLite in DataDir
	NATSURL           string // nats://…; empty: NATS JetStream in-process
	// Agents is how many jobs at once the server's own agent runs (0: it
	// has none). That agent is a child process with its own directory
	// AgentDir (default: beside DataDir, or under /var/lib/oxide/agents as
	// root) and environment (a few harmless variables, and those AgentEnv
	// names); as root, it runs as AgentUser, created if needed (empty: as
	// root).
	Agents      int
	AgentLabels []string
	AgentDir    string
	AgentUser   string
	AgentEnv    []string
	HostOnly    bool // the own agent runs every job on the host
	// Docker is how the own agent runs container jobs (docker.Open's
	// mode); DockerPrivileged lets those jobs be privileged.
	Docker           string
	DockerPrivileged bool
	// Provider makes elastic workers ("docker"; empty: none), sized by an
	// autoscaler between WorkersMin and WorkersMax at ScaleFactor workers
	// per queued job; they run WorkerImage and are destroyed after
	// WorkerIdle without work, or when their agent has not registered
	// within WorkerRegister.
	Provider      string
	WorkerPool    string // labels the provider's workers; default: an ID of DataDir
	WorkerImage   string
	WorkerNetwork string
	// WorkerDockerSocket, when set, is the engine's socket, mounted in the
	// workers so that they run container jobs on it.
	WorkerDockerSocket string
	WorkersMin         int
	WorkersMax         int
	ScaleFactor        float64
	WorkerIdle         time.Duration
	WorkerRegister     time.Duration
	AgentTimeout       time.Duration
	// Placement chooses among the agents that fit a queued job: best-fit
	// (default), least-loaded or round-robin (scheduler.Strategy).
	Placement string
	Lease     time.Duration
	LogLevel  string
	// TLS of the agents' gRPC endpoint (package pki): the CA (its
	// certificate, and its key in the same file to register agents) and
	// the listener's certificate and key. Empty: a CA made in DataDir on
	// first start and a listener certificate issued by it at every start.
	// TLSCert and TLSKey are also the API's (HTTPS, reloaded on SIGHUP);
	// without them the API is plain HTTP.
	TLSCA   string
	TLSCert string
	TLSKey  string
}

// Flags declares the configuration's flags on fs, with their defaults.
func (c *Config) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", "./oxide-data", "directory for the SQLite database, NATS store, keys and the admin token")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "address of the REST and WebSocket API")
	fs.IntVar(&c.HTTPMaxConns, "http-max-conns", 16384, "open connections of the API at most, lowered to fit the limit of open files; more wait to be accepted (0: as many as that limit allows)")
	fs.IntVar(&c.HTTPMaxConnsPerIP, "http-max-conns-per-ip", 256, "open connections of the API from one client IP at most; more are closed at once (0: no cap; behind a proxy, all clients are its IP)")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "address agents connect to (gRPC over TLS); empty: no agent endpoint")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (postgres://…); default SQLite in the data directory")
	fs.StringVar(&c.NATSURL, "nats-url", "", "external NATS URL (nats://…); default NATS JetStream in-process")
	fs.IntVar(&c.Agents, "agents", 1, "jobs at once on the server's own agent, a child process (0: none, jobs wait for agents)")
	fs.StringSliceVar(&c.AgentLabels, "agent-labels", nil, "labels of the server's own agent")
	fs.StringVar(&c.AgentDir, "agent-dir", "", "directory of the server's own agent, outside the data directory (default: DATA-DIR-agent, or /var/lib/oxide/agents/ID as root)")
	fs.StringVar(&c.AgentUser, "agent-user", "oxide-runner", "as root, the unprivileged user the server's own agent runs jobs as, created if needed (empty: root)")
	fs.StringSliceVar(&c.AgentEnv, "agent-env", nil, "variables of the server's environment its own agent gets too (for the environment secret provider); it gets none of the others")
	fs.BoolVar(&c.HostOnly, "host-only", false, "the server's own agent runs every job on the host, whatever environment it asks for")
	fs.StringVar(&c.Docker, "docker", "auto", "the server's own agent runs container jobs on the Docker engine that DOCKER_HOST names: auto (when one answers), on (required) or off")
	fs.BoolVar(&c.DockerPrivileged, "docker-privileged", false, "let jobs of the server's own agent ask for privileged containers and added capabilities")
	fs.StringVar(&c.Provider, "provider", "", "make elastic workers with this provider: docker (default: none)")
	fs.StringVar(&c.WorkerPool, "worker-pool", "", "name of this server's pool of elastic workers on the engine; servers sharing a database share one (default: an ID of the data directory)")
	fs.StringVar(&c.WorkerImage, "worker-image", "oxide/worker:dev", "image of the provider's workers (scripts/worker-image.sh builds it)")
	fs.StringVar(&c.WorkerNetwork, "worker-network", "host", "Docker network of the provider's workers; they must reach --grpc-addr")
	fs.StringVar(&c.WorkerDockerSocket, "worker-docker-socket", "", "the engine's socket (/var/run/docker.sock) to mount in the provider's workers, so that they run container jobs on it; it gives them the engine's powers")
	fs.IntVar(&c.WorkersMin, "workers-min", 0, "elastic workers kept even when idle")
	fs.IntVar(&c.WorkersMax, "workers-max", 4, "elastic workers at most")
	fs.Float64Var(&c.ScaleFactor, "scale-factor", 1, "elastic workers wanted per queued job")
	fs.DurationVar(&c.WorkerIdle, "worker-idle", 5*time.Minute, "an elastic worker idle this long is destroyed (down to --workers-min)")
	fs.DurationVar(&c.WorkerRegister, "worker-register-timeout", time.Minute, "an elastic worker whose agent has not registered this long after its creation is destroyed")
	fs.DurationVar(&c.AgentTimeout, "agent-timeout", 30*time.Second, "silence after which an agent is lost and its jobs go back to the queue")
	fs.StringVar(&c.Placement, "placement", string(scheduler.BestFit), "how a job is placed among the agents that fit it: best-fit (the one left with the least free: fewest GPUs, CPUs, memory), least-loaded (fewest of its slots busy) or round-robin")
	fs.DurationVar(&c.Lease, "lease", 30*time.Second, "how long a claimed job stays with a worker without a heartbeat")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "PEM `FILE` of the CA that signs and verifies agents' certificates, with its private key to register agents (default: ca.pem and ca-key.pem, made in the data directory)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate `FILE` of the API (HTTPS, reloaded on SIGHUP) and of the agent endpoint, with --tls-key (default: plain HTTP for the API, and for agents one issued by the CA at every start)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key `FILE` of --tls-cert")
}

// Load fills the flags that the command line did not set from the
// environment (OXIDE_FLAG_NAME) and then from the config file, if any.
func Load(fs *pflag.FlagSet, configFile string) error {
	file := map[string]any{}
	if configFile != "" {
		b, err := os.ReadFile(configFile)
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(configFile)) {
		case ".toml":
			err = toml.Unmarshal(b, &file)
		case ".yaml", ".yml", ".json":
			err = yaml.Unmarshal(b, &file)
		default:
			err = fmt.Errorf("want a .toml, .yaml or .json file")
		}
		if err != nil {
			return fmt.Errorf("%s: %w", configFile, err)
		}
		for k := range file {
			if fs.Lookup(k) == nil || k == "config" {
				return fmt.Errorf("%s: unknown setting %q", configFile, k)
			}
		}
	}
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" {
			return
		}
		env := "OXIDE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", env, err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := fs.Set(f.Name, fileValue(v)); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %s: %v", configFile, f.Name, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// fileValue renders a config file value as its flag's text.
func fileValue(v any) string {
	if list, ok := v.([]any); ok {
		parts := make([]string, len(list))
		for i, x := range list {
			parts[i] = fmt.Sprint(x)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}
