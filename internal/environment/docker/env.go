package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"

	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
)

// ErrNotPrepared is returned by Exec before Prepare or after Cleanup.
var ErrNotPrepared = errors.New("container environment is not prepared")

// keepAlive is the container's main process while it waits for steps: it
// reads the container's stdin, which the process that prepared the
// container holds open (Env.life), so that the container ends with that
// process, killed or not, and no step outlives a dead agent to run beside
// the job's next attempt.
var keepAlive = []string{"cat"}

// Env is one job's container. Exec may be called concurrently.
type Env struct {
	engine           *Engine
	jobID            string
	c                *spec.Container
	workspace        string
	registryPassword string

	id      string        // the container, set by Prepare
	life    io.ReadCloser // its stdin, held open until Cleanup
	scratch string        // a directory of this machine mounted at the same path
	volumes []string      // volumes that Prepare created
	seq     atomic.Uint64
}

var (
	_ runner.Environment = (*Env)(nil)
	_ runner.Contained   = (*Env)(nil)
)

// Contained reports that steps run in the container: they get the image's
// PATH, HOME and the rest, none of the agent's variables.
func (e *Env) Contained() bool { return true }

// ScratchDir is mounted in the container at its own path: the runner keeps
// the steps' $OXIDE_OUTPUT files there.
func (e *Env) ScratchDir() string { return e.scratch }

// Workdir is where the workspace is in the container.
func (e *Env) Workdir() string {
	if e.c.Workdir != "" {
		return e.c.Workdir
	}
	return DefaultWorkdir
}

// Prepare makes sure the image is there (pulling it, with the registry's
// credentials, when it is not), then creates and starts the container.
func (e *Env) Prepare(ctx context.Context) error {
	if e.id != "" {
		return nil
	}
	if e.c == nil || e.c.Image == "" {
		return errors.New("docker: the container environment names no image")
	}
	if r := e.c.Registry; r != nil && (r.AWSECR || r.GCPGCR) {
		return errors.New("docker: registry.aws_ecr and registry.gcp_gcr logins are not supported yet: give username and password_secret")
	}
	if (e.c.Privileged || len(e.c.Capabilities) > 0) && !e.engine.opts.AllowPrivileged {
		return errors.New("docker: this agent does not allow privileged containers or added capabilities (start it with --docker-privileged)")
	}
	hc, err := e.hostConfig()
	if err != nil {
		return err
	}
	if err := e.pullIfMissing(ctx); err != nil {
		return err
	}
	if e.scratch, err = os.MkdirTemp(e.engine.opts.TempDir, "oxide-job-"); err != nil {
		return fmt.Errorf("docker: prepare: %w", err)
	}
	if e.c.User != "" {
		// A user other than root writes its $OXIDE_OUTPUT files here.
		if err := os.Chmod(e.scratch, 0o777); err != nil {
			return fmt.Errorf("docker: prepare: %w", err)
		}
	}
	hc.Mounts = append(hc.Mounts,
		mount{Type: mountBind, Source: e.workspace, Target: e.Workdir()},
		mount{Type: mountBind, Source: e.scratch, Target: e.scratch})
	for _, v := range e.c.Volumes {
		m, err := e.mount(ctx, v)
		if err != nil {
			return err
		}
		hc.Mounts = append(hc.Mounts, m)
	}
	cfg := &containerConfig{
		Image: e.c.Image, User: e.c.User, WorkingDir: e.Workdir(), Labels: e.engine.labels(e.jobID),
		Entrypoint: keepAlive, OpenStdin: true, StdinOnce: true, AttachStdin: true, HostConfig: hc,
	}
	if len(e.c.Entrypoint) > 0 {
		cfg.Entrypoint, cfg.Cmd = e.c.Entrypoint, keepAlive
	}
	var c idResponse
	if err := e.engine.api.call(ctx, http.MethodPost, "/containers/create", nil, cfg, &c); err != nil {
		return fmt.Errorf("docker: create a container of %s: %w", e.c.Image, err)
	}
	e.id = c.ID
	if e.life, err = e.engine.api.hijack(context.WithoutCancel(ctx), "/containers/"+e.id+"/attach", url.Values{"stream": {"1"}, "stdin": {"1"}}, nil); err != nil {
		return fmt.Errorf("docker: attach to a container of %s: %w", e.c.Image, err)
	}
	if err := e.engine.api.call(ctx, http.MethodPost, "/containers/"+e.id+"/start", nil, nil, nil); err != nil {
		return fmt.Errorf("docker: start a container of %s: %w", e.c.Image, err)
	}
	return nil
}

// execFailed explains a step that could not start: when the container is
// no longer running, that it exited, with its exit code, its last output
// and what the image needs to stay up.
func (e *Env) execFailed(ctx context.Context, err error) error {
	var in struct {
		State *struct {
			Running  bool
			ExitCode int
		}
	}
	if ierr := e.engine.api.call(ctx, http.MethodGet, "/containers/"+e.id+"/json", nil, nil, &in); ierr != nil || in.State == nil || in.State.Running {
		return fmt.Errorf("docker: exec in %.12s: %w", e.id, err)
	}
	msg := fmt.Sprintf("docker: the container of %s exited with code %d before its steps could run", e.c.Image, in.State.ExitCode)
	if out := e.lastOutput(ctx); out != "" {
		msg += " (its last output: " + out + ")"
	}
	if len(e.c.Entrypoint) > 0 {
		return errors.New(msg + "; container.entrypoint must keep running, with the command it is given (" + strings.Join(keepAlive, " ") + ")")
	}
	return errors.New(msg + "; a job's container stays up with `" + strings.Join(keepAlive, " ") + "`, so the image needs " + keepAlive[0] + " on its PATH, or a container.entrypoint that keeps running")
}

// lastOutput is the container's last lines of output, joined, at most 400
// bytes.
func (e *Env) lastOutput(ctx context.Context) string {
	resp, err := e.engine.api.do(ctx, http.MethodGet, "/containers/"+e.id+"/logs", url.Values{"stdout": {"1"}, "stderr": {"1"}, "tail": {"5"}}, nil, nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	stdcopy.StdCopy(&out, &out, io.LimitReader(resp.Body, 64<<10))
	var lines []string
	for l := range strings.Lines(out.String()) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	s := strings.Join(lines, " | ")
	if len(s) > 400 {
		s = s[len(s)-400:]
	}
	return s
}

// hostConfig maps the pipeline's network, privileges and resources.
func (e *Env) hostConfig() (*hostConfig, error) {
	init := true // reaps the steps' orphans and forwards signals
	hc := &hostConfig{Init: &init, Privileged: e.c.Privileged, CapAdd: e.c.Capabilities}
	switch n := e.c.Network; n {
	case "", "bridge":
		hc.NetworkMode = "bridge"
	default: // host, none, or a network of the engine's
		hc.NetworkMode = n
	}
	if r := e.c.Resources; r != nil {
		cpu, err := spec.ParseCPU(r.CPU)
		if err != nil {
			return nil, fmt.Errorf("docker: resources.cpu %q: %w", r.CPU, err)
		}
		hc.NanoCPUs = int64(cpu * 1e9)
		if hc.Memory, err = spec.ParseMemory(r.Memory); err != nil {
			return nil, fmt.Errorf("docker: resources.memory: %w", err)
		}
		if r.GPU != nil && r.GPU.Count != 0 {
			hc.DeviceRequests = []deviceRequest{{Count: r.GPU.Count, Capabilities: [][]string{{"gpu"}}}}
		}
	}
	return hc, nil
}

// mount maps a pipeline volume. A named volume that does not exist is
// created for the job and removed with it; a cache volume is kept for the
// jobs that follow.
func (e *Env) mount(ctx context.Context, v spec.Volume) (mount, error) {
	m := mount{Target: v.Target, ReadOnly: v.ReadOnly}
	switch v.Type {
	case "", "bind":
		m.Type, m.Source = mountBind, v.Source
		if !filepath.IsAbs(m.Source) {
			m.Source = filepath.Join(e.workspace, m.Source)
		}
	case "tmpfs":
		m.Type = mountTmpfs
	case "volume":
		m.Type, m.Source = mountVolume, v.Source
		if v.Source == "" {
			break // anonymous: removed with the container
		}
		if err := e.engine.api.call(ctx, http.MethodGet, "/volumes/"+v.Source, nil, nil, nil); err == nil {
			break // someone else's: used, kept
		} else if !notFound(err) {
			return m, fmt.Errorf("docker: volume %s: %w", v.Source, err)
		}
		vol := map[string]any{"Name": v.Source, "Labels": e.engine.labels(e.jobID)}
		if err := e.engine.api.call(ctx, http.MethodPost, "/volumes/create", nil, vol, nil); err != nil {
			return m, fmt.Errorf("docker: create volume %s: %w", v.Source, err)
		}
		e.volumes = append(e.volumes, v.Source)
	case "cache":
		m.Type, m.Source = mountVolume, "oxide-cache-"+v.Source
	default:
		return m, fmt.Errorf("docker: volume %s: unknown type %q (want bind, volume, tmpfs or cache)", v.Target, v.Type)
	}
	return m, nil
}

// pullIfMissing pulls the image unless the engine has it.
func (e *Env) pullIfMissing(ctx context.Context) error {
	image := e.c.Image
	err := e.engine.api.call(ctx, http.MethodGet, "/images/"+image+"/json", nil, nil, nil)
	if err == nil {
		return nil
	}
	if !notFound(err) {
		return fmt.Errorf("docker: inspect image %s: %w", image, err)
	}
	h := http.Header{}
	if r := e.c.Registry; r != nil && (r.Username != "" || e.registryPassword != "") {
		h.Set("X-Registry-Auth", registryAuth(r.Username, e.registryPassword, r.URL))
	}
	resp, err := e.engine.api.do(ctx, http.MethodPost, "/images/create", pullQuery(image), nil, h)
	if err == nil {
		err = pullResult(resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		return fmt.Errorf("image %s is not on this machine and could not be pulled: %w", image, err)
	}
	return nil
}

// Exec runs one step in the container: its script, from a file of the
// scratch directory, with the step's shell (by default bash when the image
// has it, else sh), in a process group that a cancellation signals: SIGTERM,
// then SIGKILL after the grace period. It returns when the step's shell
// has exited, without waiting for what the step left running in the
// background (Cleanup removes that with the container).
func (e *Env) Exec(ctx context.Context, cmd runner.Command) (int, error) {
	if e.id == "" {
		return -1, ErrNotPrepared
	}
	shell := cmd.Shell
	if shell == "" {
		shell = e.c.Shell
	}
	script := filepath.Join(e.scratch, "step-"+strconv.FormatUint(e.seq.Add(1), 10))
	st := stepFiles{pid: script + ".pid", exit: script + ".exit"}
	launch, err := launcher(shell, script, st)
	if err != nil {
		return -1, err
	}
	if err := os.WriteFile(script, []byte(cmd.Script), 0o644); err != nil {
		return -1, fmt.Errorf("docker: write script: %w", err)
	}
	defer os.Remove(script)
	defer os.Remove(st.pid)
	defer os.Remove(st.exit)

	// The API calls outlive ctx: a cancelled step is stopped by signals.
	api := context.WithoutCancel(ctx)
	var ex idResponse
	if err := e.engine.api.call(api, http.MethodPost, "/containers/"+e.id+"/exec", nil, execConfig{
		User: e.c.User, Env: e.inside(cmd.Env), WorkingDir: e.insidePath(cmd.Dir),
		Cmd: []string{"/bin/sh", "-c", launch}, AttachStdout: true, AttachStderr: true,
	}, &ex); err != nil {
		return -1, e.execFailed(api, err)
	}
	att, err := e.engine.api.hijack(api, "/exec/"+ex.ID+"/start", nil, execStart{})
	if err != nil {
		return -1, fmt.Errorf("docker: exec in %.12s: %w", e.id, err)
	}
	defer att.Close()
	copied := make(chan struct{})
	go func() {
		stdcopy.StdCopy(cmd.Stdout, cmd.Stderr, att)
		close(copied)
	}()
	exited := st.exited(copied)
	ended := func(timeout <-chan struct{}) bool {
		select {
		case <-copied: // the usual end: the shell exited, nothing else holds its output
		case <-exited:
			// A background process holds the output: take what the shell
			// wrote before it exited, then let go.
			select {
			case <-copied:
			case <-time.After(drainTime):
				att.Close()
				<-copied
			}
		case <-timeout:
			return false
		}
		return true
	}
	if !ended(ctx.Done()) {
		// Cancelled: SIGTERM to the step's group, SIGKILL after the grace
		// period, and after another, give up on its output.
		for _, sig := range []string{"TERM", "KILL", ""} {
			if sig == "" {
				att.Close()
				<-copied
				break
			}
			e.signal(api, st.pid, sig)
			if ended(after(e.engine.opts.Grace)) {
				break
			}
		}
		code, err := e.exitCode(api, ex.ID, st)
		if err != nil {
			return -1, err
		}
		return code, context.Cause(ctx)
	}
	return e.exitCode(api, ex.ID, st)
}

// after returns a channel closed after d.
func after(d time.Duration) <-chan struct{} {
	c := make(chan struct{})
	time.AfterFunc(d, func() { close(c) })
	return c
}

// drainTime is how long the output of a step whose shell has exited may
// go on arriving while a background process holds it open.
const drainTime = 100 * time.Millisecond

// stepFiles are where a step's launcher writes its shell's PID and, when
// the shell has exited, its exit code.
type stepFiles struct{ pid, exit string }

// exited returns a channel closed once the step's exit file exists; it
// stops looking when stop is closed.
func (f stepFiles) exited(stop <-chan struct{}) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := os.Stat(f.exit); err == nil {
					close(c)
					return
				}
			}
		}
	}()
	return c
}

// signal sends sig to the step whose shell wrote its PID to pidFile: an
// exec'd process leads a process group of its own. Before the shell has
// written it, or when no exec can run, the signal goes to the container.
func (e *Env) signal(ctx context.Context, pidFile, sig string) {
	b, err := os.ReadFile(pidFile)
	if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		p := strconv.Itoa(pid)
		var ex idResponse
		err := e.engine.api.call(ctx, http.MethodPost, "/containers/"+e.id+"/exec", nil, execConfig{
			User: "0", Cmd: []string{"/bin/sh", "-c", "kill -" + sig + " -" + p + " || kill -" + sig + " " + p},
		}, &ex)
		if err == nil {
			err = e.engine.api.call(ctx, http.MethodPost, "/exec/"+ex.ID+"/start", nil, execStart{Detach: true}, nil)
		}
		if err == nil || notFound(err) || conflict(err) {
			return // sent; or the container is gone or stopping, and the step with it
		}
	}
	e.engine.api.call(ctx, http.MethodPost, "/containers/"+e.id+"/kill", url.Values{"signal": {sig}}, nil, nil)
}

// exitCode is the step's shell's exit code, from its exit file, else
// (a signal killed the launcher) the exec's: 128+signal.
func (e *Env) exitCode(ctx context.Context, execID string, st stepFiles) (int, error) {
	if b, err := os.ReadFile(st.exit); err == nil {
		if code, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return code, nil
		}
	}
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		var r struct {
			Running  bool
			ExitCode int
		}
		if err := e.engine.api.call(ctx, http.MethodGet, "/exec/"+execID+"/json", nil, nil, &r); err != nil {
			return -1, fmt.Errorf("docker: exec result: %w", err)
		}
		if !r.Running {
			return r.ExitCode, nil
		}
		time.Sleep(delay)
	}
}

// launcher is the /bin/sh command line that records its PID (the
// step's process group), runs the script with its shell and records the
// shell's exit code. Its TERM trap does nothing but let it outlive the
// shell, whose own traps run, to record the code.
func launcher(shell, script string, st stepFiles) (string, error) {
	s := quote(script)
	bash := "bash --noprofile --norc -e -o pipefail " + s
	var run string
	switch shell {
	case "":
		run = "if command -v bash >/dev/null 2>&1; then " + bash + "; else sh -e " + s + "; fi"
	case "bash":
		run = bash
	case "sh":
		run = "sh -e " + s
	case "python":
		run = "python3 " + s
	default:
		return "", fmt.Errorf("docker: unknown shell %q (want bash, sh or python)", shell)
	}
	return "echo $$ >" + quote(st.pid) + "; trap : TERM INT; " + run + "; echo $? >" + quote(st.exit), nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// insidePath is where a path of the workspace is in the container.
func (e *Env) insidePath(p string) string {
	if rest, ok := strings.CutPrefix(p, e.workspace); ok && (rest == "" || rest[0] == '/') {
		return e.Workdir() + rest
	}
	return p
}

// inside rewrites variables whose values are paths in the workspace
// (OXIDE_WORKSPACE) to their paths in the container.
func (e *Env) inside(env []string) []string {
	out := make([]string, len(env))
	for i, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		out[i] = k + "=" + e.insidePath(v)
	}
	return out
}

// Cleanup removes the container with whatever its steps left running, the
// volumes Prepare created and the scratch directory. It is safe to call
// when Prepare failed.
func (e *Env) Cleanup(ctx context.Context) error {
	var errs []error
	if e.life != nil {
		e.life.Close()
		e.life = nil
	}
	if e.id != "" {
		errs = append(errs, e.engine.removeContainer(ctx, e.id))
		e.id = ""
	}
	for _, v := range e.volumes {
		errs = append(errs, e.engine.removeVolume(ctx, v))
	}
	e.volumes = nil
	if e.scratch != "" {
		errs = append(errs, os.RemoveAll(e.scratch))
		e.scratch = ""
	}
	return errors.Join(errs...)
}
