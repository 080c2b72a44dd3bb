// Package docker is the container Environment: each job gets one
// container from its image, with the workspace bind-mounted at the
// container's working directory, and every step runs in it through the
// Docker Engine API (an exec per step, with the step's shell). Everything
// a job makes is labelled with its owner, so that an owner that was killed
// removes what it left behind when it starts again (Engine.Sweep).
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
)

// Labels of everything the package makes.
const (
	LabelManaged = "oxide.managed" // "true"
	LabelOwner   = "oxide.owner"   // Options.Owner
	LabelJob     = "oxide.job"     // the job's ID
)

// DefaultWorkdir is where the workspace is mounted when the pipeline does
// not say.
const DefaultWorkdir = "/workspace"

// Options configure an Engine.
type Options struct {
	// Owner names the process whose jobs these are ("agent:<id>"), in a
	// label of every container and volume, for Sweep.
	Owner string
	// Grace is the time between SIGTERM and SIGKILL of a cancelled step.
	Grace time.Duration
	// AllowPrivileged lets jobs ask for privileged containers and added
	// capabilities; without it they are refused.
	AllowPrivileged bool
	// TempDir is where jobs' scratch directories are made, mounted in
	// their containers at the same path; empty: os.TempDir(). An agent in
	// a container that runs jobs on its host's engine sets a directory
	// that has the same path on the host.
	TempDir string
}

// Engine makes container environments on one Docker engine.
type Engine struct {
	api  *api
	opts Options
}

// Connect returns an Engine for the engine that DOCKER_HOST (or the default
// socket) names, at the API version both sides speak. It fails when no
// engine answers.
func Connect(ctx context.Context, opts Options) (*Engine, error) {
	a, err := dialEngine(ctx)
	if err != nil {
		return nil, fmt.Errorf("docker: no engine answers: %w", err)
	}
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Second
	}
	return &Engine{api: a, opts: opts}, nil
}

// Modes of Open.
const (
	ModeAuto = "auto" // use the engine when one answers; also ""
	ModeOn   = "on"   // an engine is required
	ModeOff  = "off"  // run no containers
)

// Open connects to the engine as mode says, then sweeps what opts.Owner
// left behind. It returns nil, without an error, when mode is off, or auto
// and no engine answers; it logs what it found.
func Open(ctx context.Context, mode string, opts Options, log *slog.Logger) (*Engine, error) {
	switch mode {
	case ModeOff:
		return nil, nil
	case ModeAuto, ModeOn, "":
	default:
		return nil, fmt.Errorf("docker: mode %q: want auto, on or off", mode)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e, err := Connect(cctx, opts)
	if err != nil {
		if mode == ModeOn {
			return nil, err
		}
		log.Info("no Docker engine: jobs that ask for a container will fail", "err", err)
		return nil, nil
	}
	n, err := e.Sweep(ctx)
	if err != nil {
		log.Warn("docker: sweep", "err", err)
	}
	log.Info("docker engine ready", "version", e.api.version, "swept", n)
	return e, nil
}

// Close releases the engine's idle connections.
func (e *Engine) Close() error {
	e.api.http.CloseIdleConnections()
	return nil
}

// Env returns the environment of one job: a container of c.Image with
// workspace (a directory of this machine) mounted at c.Workdir.
// registryPassword is the resolved registry.password_secret, if any.
func (e *Engine) Env(jobID string, c *spec.Container, workspace, registryPassword string) runner.Environment {
	return &Env{engine: e, jobID: jobID, c: c, workspace: workspace, registryPassword: registryPassword}
}

// Sweep removes the containers and volumes that this Engine's owner made
// and left behind (it was killed), and returns how many it removed.
func (e *Engine) Sweep(ctx context.Context) (int, error) {
	return e.sweep(ctx, func(labels map[string]string) bool { return labels[LabelOwner] == e.opts.Owner })
}

// SweepOwners removes what owners left behind for which gone returns
// true: the local runner's runs whose processes have exited.
func (e *Engine) SweepOwners(ctx context.Context, prefix string, gone func(owner string) bool) (int, error) {
	return e.sweep(ctx, func(labels map[string]string) bool {
		o := labels[LabelOwner]
		return strings.HasPrefix(o, prefix) && o != e.opts.Owner && gone(o)
	})
}

func (e *Engine) sweep(ctx context.Context, match func(labels map[string]string) bool) (int, error) {
	f := labelFilter(LabelManaged + "=true")
	var cs []labelled
	if err := e.api.call(ctx, http.MethodGet, "/containers/json", url.Values{"all": {"1"}, "filters": {f}}, nil, &cs); err != nil {
		return 0, fmt.Errorf("docker: sweep: %w", err)
	}
	n := 0
	var errs []error
	for _, c := range cs {
		if !match(c.Labels) {
			continue
		}
		if err := e.removeContainer(ctx, c.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	var vs struct{ Volumes []labelled }
	if err := e.api.call(ctx, http.MethodGet, "/volumes", url.Values{"filters": {f}}, nil, &vs); err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("docker: sweep: %w", err))...)
	}
	for _, v := range vs.Volumes {
		if !match(v.Labels) {
			continue
		}
		if err := e.removeVolume(ctx, v.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (e *Engine) removeContainer(ctx context.Context, id string) error {
	err := e.api.call(ctx, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}, "v": {"1"}}, nil, nil)
	if err != nil && !notFound(err) {
		return fmt.Errorf("docker: remove container %.12s: %w", id, err)
	}
	return nil
}

func (e *Engine) removeVolume(ctx context.Context, name string) error {
	err := e.api.call(ctx, http.MethodDelete, "/volumes/"+name, url.Values{"force": {"1"}}, nil, nil)
	if err != nil && !notFound(err) {
		return fmt.Errorf("docker: remove volume %s: %w", name, err)
	}
	return nil
}

// labels are those of everything a job makes.
func (e *Engine) labels(jobID string) map[string]string {
	return map[string]string{LabelManaged: "true", LabelOwner: e.opts.Owner, LabelJob: jobID}
}
