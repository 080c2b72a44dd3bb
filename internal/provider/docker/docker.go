// Package docker is a provider.Provider that runs each worker as a
// container of the worker image (deploy/worker, built locally with
// scripts/worker-image.sh: nothing is pulled) on a Docker Engine. The agent
// in it takes its settings from OXIDE_AGENT_* environment variables.
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/oxide-ci/oxide/internal/provider"
)

// Labels of the containers the provider makes.
const (
	labelManaged  = "oxide.managed"  // "true"
	labelRole     = "oxide.role"     // "worker"
	labelWorker   = "oxide.worker"   // the worker's ID
	labelProvider = "oxide.provider" // "docker"
	labelPool     = "oxide.pool"     // Config.Pool
)

// dataDir is the agent's data directory in a worker, a volume of the
// worker image that Destroy removes with the container.
const dataDir = "/var/lib/oxide-agent"

// Config configures a Provider.
type Config struct {
	Image string // the worker image (required)
	// Pool names this provider's workers among those of other servers on
	// the same engine: List sees only its pool. Default "default".
	Pool        string
	Network     string        // the containers' network; default "host", so that agents reach a server on 127.0.0.1
	Grace       time.Duration // how long Destroy lets an agent hand its jobs back before it is killed; default 10s
	CPUs        float64       // CPUs a worker may use; 0: no limit
	Memory      int64         // bytes of memory a worker may use; 0: no limit
	Concurrency int           // jobs an agent runs at once; 0: the agent's default
	// DockerSocket, when set, is this engine's socket on the host: each
	// worker gets it at /var/run/docker.sock and runs container jobs on
	// the engine, beside itself. Its data directory is then
	// DataRoot/<worker ID> on the host, mounted at the same path, so that
	// the paths of its workspaces mean the same to the engine.
	DockerSocket string
	DataRoot     string
	Logger       *slog.Logger
}

// Provider makes workers as containers.
type Provider struct {
	cli *client.Client
	cfg Config
}

var _ provider.Provider = (*Provider)(nil)

// Connect returns a client of the engine that DOCKER_HOST (or the default
// socket) names, at the API version both sides speak. It fails when no
// engine answers.
func Connect(ctx context.Context) (*client.Client, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker: no engine answers: %w", err)
	}
	return cli, nil
}

// New returns a Provider of workers on the engine of cli, which should
// have negotiated its API version.
func New(cli *client.Client, cfg Config) *Provider {
	if cfg.Network == "" {
		cfg.Network = "host"
	}
	if cfg.Pool == "" {
		cfg.Pool = "default"
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Provider{cli: cli, cfg: cfg}
}

// Name is "docker:" and the pool: its workers' provider in the store, so
// that servers of different pools sharing a database leave each other's
// workers alone.
func (p *Provider) Name() string { return "docker:" + p.cfg.Pool }

// containerName returns the name of the container of worker id:
// oxide-worker- and the first 8 characters of id.
func containerName(id string) string { return "oxide-worker-" + id[:min(8, len(id))] }

// Create creates and starts the container of spec, named
// containerName(spec.ID), and returns its ID. It removes the container
// when it cannot start it.
func (p *Provider) Create(ctx context.Context, spec provider.Spec) (handle string, err error) {
	if p.cfg.Image == "" {
		return "", errors.New("docker: no worker image configured")
	}
	name := containerName(spec.ID)
	env := []string{
		"OXIDE_AGENT_SERVER=" + spec.Server,
		"OXIDE_AGENT_TOKEN=" + spec.Token,
		"OXIDE_AGENT_LABELS=" + strings.Join(spec.Labels, ","),
		"OXIDE_AGENT_NAME=" + name,
	}
	hc := &container.HostConfig{
		NetworkMode: container.NetworkMode(p.cfg.Network),
		Init:        new(true), // reaps the orphans of jobs' processes
		Resources:   container.Resources{NanoCPUs: int64(p.cfg.CPUs * 1e9), Memory: p.cfg.Memory},
	}
	if p.cfg.DockerSocket != "" {
		dir := filepath.Join(p.cfg.DataRoot, spec.ID)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("docker: worker data: %w", err)
		}
		defer func() {
			if err != nil {
				os.RemoveAll(dir)
			}
		}()
		hc.Mounts = []mount.Mount{
			{Type: mount.TypeBind, Source: dir, Target: dir},
			{Type: mount.TypeBind, Source: p.cfg.DockerSocket, Target: "/var/run/docker.sock"},
		}
		env = append(env, "OXIDE_AGENT_DATA_DIR="+dir, "OXIDE_AGENT_DOCKER=on")
	} else {
		env = append(env, "OXIDE_AGENT_DATA_DIR="+dataDir, "OXIDE_AGENT_DOCKER=off")
	}
	if p.cfg.Concurrency > 0 {
		env = append(env, fmt.Sprintf("OXIDE_AGENT_CONCURRENCY=%d", p.cfg.Concurrency))
	}
	c, err := p.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:  name,
		Image: p.cfg.Image,
		Config: &container.Config{
			Env: env,
			Labels: map[string]string{
				labelManaged: "true", labelRole: "worker", labelWorker: spec.ID, labelProvider: "docker", labelPool: p.cfg.Pool,
			},
		},
		HostConfig: hc,
	})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			if ierr := p.image(ctx); ierr != nil {
				return "", ierr
			}
		}
		return "", fmt.Errorf("docker: create %s: %w", name, err)
	}
	if _, err := p.cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		// Remove it even when ctx is done.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if _, rerr := p.cli.ContainerRemove(rctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); rerr != nil && !cerrdefs.IsNotFound(rerr) {
			err = errors.Join(err, fmt.Errorf("remove: %w", rerr))
		}
		return "", fmt.Errorf("docker: start %s: %w", name, err)
	}
	p.cfg.Logger.Info("worker container started", "worker", spec.ID, "container", name, "id", c.ID, "image", p.cfg.Image)
	return c.ID, nil
}

// Destroy stops the container handle with SIGTERM, kills it when it is
// still running after the grace period, and removes it with its anonymous
// volumes and its data directory on the host, if any. A container that is
// gone already is not an error.
func (p *Provider) Destroy(ctx context.Context, handle string) error {
	in, err := p.cli.ContainerInspect(ctx, handle, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("docker: inspect %s: %w", handle, err)
	}
	grace := new(int(math.Ceil(p.cfg.Grace.Seconds())))
	if _, err := p.cli.ContainerStop(ctx, handle, client.ContainerStopOptions{Timeout: grace}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: stop %s: %w", handle, err)
	}
	if _, err := p.cli.ContainerRemove(ctx, handle, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: remove %s: %w", handle, err)
	}
	if id := in.Container.Config.Labels[labelWorker]; p.cfg.DockerSocket != "" && id != "" {
		if err := os.RemoveAll(filepath.Join(p.cfg.DataRoot, id)); err != nil {
			return fmt.Errorf("docker: worker data: %w", err)
		}
	}
	p.cfg.Logger.Info("worker container removed", "id", handle)
	return nil
}

// List returns the worker containers of this provider's pool, running or
// not.
func (p *Provider) List(ctx context.Context) ([]provider.Instance, error) {
	cs, err := p.containers(ctx, false)
	if err != nil {
		return nil, err
	}
	list := make([]provider.Instance, 0, len(cs))
	for _, c := range cs {
		list = append(list, provider.Instance{WorkerID: c.Labels[labelWorker], Handle: c.ID, Running: c.State == container.StateRunning})
	}
	return list, nil
}

// containers lists the worker containers, only the running ones if running.
func (p *Provider) containers(ctx context.Context, running bool) ([]container.Summary, error) {
	f := make(client.Filters).Add("label", labelRole+"=worker", labelProvider+"=docker", labelPool+"="+p.cfg.Pool)
	if running {
		f.Add("status", string(container.StateRunning))
	}
	res, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("docker: list workers: %w", err)
	}
	return res.Items, nil
}

// Health reports whether the engine answers and has the worker image.
func (p *Provider) Health(ctx context.Context) error {
	if p.cfg.Image == "" {
		return errors.New("docker: no worker image configured")
	}
	if _, err := p.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	return p.image(ctx)
}

// image reports whether the engine has the worker image.
func (p *Provider) image(ctx context.Context) error {
	if _, err := p.cli.ImageInspect(ctx, p.cfg.Image); err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("docker: worker image %s not found: build it with scripts/worker-image.sh", p.cfg.Image)
		}
		return fmt.Errorf("docker: worker image %s: %w", p.cfg.Image, err)
	}
	return nil
}

// Capacity returns the engine host's CPUs and memory and the number of
// running workers.
func (p *Provider) Capacity(ctx context.Context) (provider.Capacity, error) {
	info, err := p.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return provider.Capacity{}, fmt.Errorf("docker: info: %w", err)
	}
	running, err := p.containers(ctx, true)
	if err != nil {
		return provider.Capacity{}, err
	}
	return provider.Capacity{CPUs: info.Info.NCPU, MemoryBytes: info.Info.MemTotal, Workers: len(running)}, nil
}
