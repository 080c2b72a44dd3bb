package docker_test

// These tests run on the machine's real Docker Engine, with a busybox image
// that dockertest builds locally (no registry); they skip when no engine
// answers.

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/oxide-ci/oxide/internal/environment/docker"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/testkit"
	"github.com/oxide-ci/oxide/internal/testkit/dockertest"
)

// sink collects a job's output lines and results.
type sink struct {
	mu    sync.Mutex
	lines []string
}

func (s *sink) StepStarted(runner.StepInfo) {}
func (s *sink) StepLines(_ runner.StepInfo, stream runner.Stream, lines [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range lines {
		s.lines = append(s.lines, string(stream)+": "+string(l))
	}
}
func (s *sink) StepCompleted(runner.StepInfo, runner.StepResult) {}

func (s *sink) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// engine connects with a test's own owner label, and checks at the end
// that the test's jobs left nothing behind.
func engine(t *testing.T, opts docker.Options) (*docker.Engine, *client.Client, string) {
	t.Helper()
	cli := dockertest.Client(t)
	image := dockertest.BusyboxImage(t, cli)
	opts.Owner = "test:" + t.Name()
	if opts.Grace == 0 {
		opts.Grace = time.Second
	}
	e, err := docker.Connect(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Sweep(context.Background()) // after a failure, leave nothing behind either
		e.Close()
	})
	return e, cli, image
}

// leftovers lists the containers and volumes of a job.
func leftovers(t *testing.T, cli *client.Client, jobID string) int {
	t.Helper()
	f := client.Filters{}.Add("label", docker.LabelJob+"="+jobID)
	cs, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := cli.VolumeList(t.Context(), client.VolumeListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	return len(cs.Items) + len(vs.Items)
}

func step(id, run string) *spec.Step {
	return &spec.Step{ID: id, Name: id, Run: run, ContinueOnError: "false"}
}

// run runs steps as a job in env and cleans up.
func run(t *testing.T, env runner.Environment, ws string, steps []*spec.Step, secrets ...spec.Secret) (runner.JobResult, string) {
	t.Helper()
	if err := env.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := env.Cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	s := &sink{}
	job := &spec.Job{RunID: "r", Stage: "s", Steps: steps, Workspace: ws, Secrets: secrets}
	return runner.Run(t.Context(), env, job, s), s.output()
}

// TestStepsRunInContainer: steps run in the image (its os-release, not
// the host's) with the workspace mounted, as the configured user; files
// they write are on the host; exit codes, outputs and masking work as on
// the host; the agent's own variables stay out; nothing is left after
// Cleanup.
func TestStepsRunInContainer(t *testing.T) {
	t.Setenv("HOME", "/agent-home")
	t.Setenv("LANG", "agent-lang")
	e, cli, image := engine(t, docker.Options{})
	ws := t.TempDir()
	os.WriteFile(filepath.Join(ws, "input.txt"), []byte("from the host\n"), 0o644)
	env := e.Env("job-basic", &pipeline.Container{Image: image}, ws, "")
	res, out := run(t, env, ws, []*spec.Step{
		step("look", `cat /etc/os-release; pwd; echo "ws=$OXIDE_WORKSPACE"; cat input.txt; echo "token=$TOKEN"; echo made > made.txt; echo oops >&2; env`),
		step("out", `echo "answer=42" >> "$OXIDE_OUTPUT"`),
		step("use", `echo "got ${{ steps.out.outputs.answer }}"; exit 3`),
	}, spec.Secret{Name: "TOKEN", Value: "s3cr3t-value", Masked: true})
	hostRelease, _ := os.ReadFile("/etc/os-release")
	for _, want := range []string{`stdout: NAME="Oxide test busybox"`, "stdout: /workspace", "stdout: ws=/workspace",
		"stdout: from the host", "stdout: token=***", "stderr: oops", "stdout: got 42"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cr3t-value") || strings.Contains(string(hostRelease), "Oxide test busybox") {
		t.Errorf("secret in the output, or the host is the image:\n%s", out)
	}
	if strings.Contains(out, "/agent-home") || strings.Contains(out, "agent-lang") || strings.Contains(out, "PATH="+os.Getenv("PATH")+"\n") {
		t.Errorf("the agent's HOME, LANG or PATH reached the container:\n%s", out)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "made.txt")); err != nil || string(b) != "made\n" {
		t.Errorf("file written in the container: %q, %v", b, err)
	}
	if res.Status != runner.StatusFailure || res.Steps[2].ExitCode != 3 || res.Steps[0].Status != runner.StatusSuccess {
		t.Errorf("result %+v, want the last step failed with 3", res)
	}
	if n := leftovers(t, cli, "job-basic"); n != 0 {
		t.Errorf("%d containers or volumes left after Cleanup", n)
	}
}

// TestUserShellAndDefaults: the container's user runs the steps; the
// default shell is bash when the image has it; sh and python are chosen
// by name.
func TestUserShellAndDefaults(t *testing.T) {
	t.Parallel()
	e, _, image := engine(t, docker.Options{})
	ws := t.TempDir()
	os.Chmod(ws, 0o777)
	env := e.Env("job-user", &pipeline.Container{Image: image, User: "65534", Workdir: "/src"}, ws, "")
	sh := step("sh", `echo "sh: $0"`)
	sh.Shell = "sh"
	res, out := run(t, env, ws, []*spec.Step{
		step("who", `id -u; pwd; echo "$BASH_VERSION" | cut -c1; echo "x=1" >> "$OXIDE_OUTPUT"`), sh,
	})
	if res.Status != runner.StatusSuccess {
		t.Fatalf("status %s:\n%s", res.Status, out)
	}
	for _, want := range []string{"stdout: 65534", "stdout: /src"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat("/bin/bash-static"); err == nil && !strings.Contains(out, "stdout: 5") {
		t.Errorf("default shell is not bash in an image that has it:\n%s", out)
	}
	if res.Outputs["who"]["x"] != "1" {
		t.Errorf("outputs of a non-root step: %v", res.Outputs)
	}
}

// TestLimitsAndMounts: resources, network, volumes and tmpfs reach the
// container (inspected), and a volume the job made is removed with it.
func TestLimitsAndMounts(t *testing.T) {
	t.Parallel()
	e, cli, image := engine(t, docker.Options{})
	ws := t.TempDir()
	os.Mkdir(filepath.Join(ws, "data"), 0o755)
	os.WriteFile(filepath.Join(ws, "data", "x"), []byte("bound\n"), 0o644)
	vol := "oxide-test-vol-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	c := &pipeline.Container{
		Image: image, Network: "none",
		Resources: &pipeline.Resources{CPU: "500m", Memory: "64Mi"},
		Volumes: []pipeline.Volume{
			{Source: "data", Target: "/data", ReadOnly: true},
			{Type: "volume", Source: vol, Target: "/vol"},
			{Type: "tmpfs", Target: "/scratch"},
		},
	}
	env := e.Env("job-limits", c, ws, "")
	if err := env.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer env.Cleanup(context.Background())
	cs, err := cli.ContainerList(t.Context(), client.ContainerListOptions{Filters: client.Filters{}.Add("label", docker.LabelJob+"=job-limits")})
	if err != nil || len(cs.Items) != 1 {
		t.Fatalf("containers of the job: %v, %v", cs.Items, err)
	}
	in, err := cli.ContainerInspect(t.Context(), cs.Items[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := in.Container.HostConfig
	if hc.NanoCPUs != 5e8 || hc.Memory != 64<<20 || hc.NetworkMode != "none" {
		t.Errorf("cpu %d, memory %d, network %s: want 5e8, 64Mi, none", hc.NanoCPUs, hc.Memory, hc.NetworkMode)
	}
	s := &sink{}
	job := &spec.Job{Stage: "s", Workspace: ws, Steps: []*spec.Step{
		step("mounts", `cat /data/x; touch /data/y 2>/dev/null && echo writable; echo v > /vol/f; mount | grep -c ' /scratch type tmpfs'; ip link 2>/dev/null | grep -c eth0 || true`),
	}}
	res := runner.Run(t.Context(), env, job, s)
	out := s.output()
	if res.Status != runner.StatusSuccess || !strings.Contains(out, "stdout: bound") || strings.Contains(out, "writable") ||
		!strings.Contains(out, "stdout: 1\nstdout: 0") {
		t.Errorf("status %s, output:\n%s\nwant the bind read-only, a tmpfs, no eth0", res.Status, out)
	}
	if err := env.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.VolumeInspect(t.Context(), vol, client.VolumeInspectOptions{}); err == nil {
		t.Errorf("volume %s that the job created is still there", vol)
	}
}

// TestTimeoutAndCancel: a step past its timeout gets SIGTERM (its trap
// runs) and the job goes on; a cancelled job's step is killed even when it
// ignores SIGTERM; Cleanup removes the container either way.
func TestTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	e, cli, image := engine(t, docker.Options{Grace: 500 * time.Millisecond})
	ws := t.TempDir()
	slow := step("slow", `trap 'echo got TERM; exit 9' TERM; sleep 60 & wait`)
	slow.Timeout = 500 * time.Millisecond
	slow.ContinueOnError = "true"
	res, out := run(t, e.Env("job-timeout", &pipeline.Container{Image: image}, ws, ""), ws,
		[]*spec.Step{slow, step("after", "echo after")})
	if res.Steps[0].Status != runner.StatusTimeout || res.Steps[1].Status != runner.StatusSuccess ||
		!strings.Contains(out, "got TERM") || !strings.Contains(out, "stdout: after") {
		t.Errorf("steps %+v, output:\n%s", res.Steps, out)
	}

	env := e.Env("job-cancel", &pipeline.Container{Image: image}, ws, "")
	if err := env.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(t.Context())
	stubborn := errors.New("stop")
	time.AfterFunc(300*time.Millisecond, func() { cancel(stubborn) })
	start := time.Now()
	jr := runner.Run(ctx, env, &spec.Job{Stage: "s", Workspace: ws, Steps: []*spec.Step{
		step("stubborn", `trap '' TERM; sleep 60`),
	}}, &sink{})
	if jr.Status != runner.StatusCancelled || time.Since(start) > 20*time.Second {
		t.Errorf("cancelled job: %s after %s", jr.Status, time.Since(start))
	}
	if err := env.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"job-timeout", "job-cancel"} {
		if n := leftovers(t, cli, id); n != 0 {
			t.Errorf("%s: %d containers or volumes left", id, n)
		}
	}
}

// TestRefusals: a missing image that cannot be pulled, and privileges
// that the agent does not allow, fail Prepare with a clear error.
func TestRefusals(t *testing.T) {
	t.Parallel()
	e, _, image := engine(t, docker.Options{})
	ws := t.TempDir()
	missing := e.Env("job-missing", &pipeline.Container{Image: "oxide-test/no-such-image:1"}, ws, "")
	err := missing.Prepare(t.Context())
	missing.Cleanup(context.Background())
	if err == nil || !strings.Contains(err.Error(), "oxide-test/no-such-image:1") || !strings.Contains(err.Error(), "could not be pulled") {
		t.Errorf("missing image: %v", err)
	}
	ecr := e.Env("job-ecr", &pipeline.Container{Image: image, Registry: &pipeline.Registry{AWSECR: true}}, ws, "")
	err = ecr.Prepare(t.Context())
	ecr.Cleanup(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not supported yet") {
		t.Errorf("an ECR login: %v", err)
	}
	priv := e.Env("job-priv", &pipeline.Container{Image: image, Capabilities: []string{"NET_ADMIN"}}, ws, "")
	err = priv.Prepare(t.Context())
	priv.Cleanup(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--docker-privileged") {
		t.Errorf("capabilities without permission: %v", err)
	}
}

// TestPrivileged: with permission, capabilities reach the container.
func TestPrivileged(t *testing.T) {
	t.Parallel()
	e, _, image := engine(t, docker.Options{AllowPrivileged: true})
	ws := t.TempDir()
	res, out := run(t, e.Env("job-caps", &pipeline.Container{Image: image, Capabilities: []string{"NET_ADMIN"}}, ws, ""), ws,
		[]*spec.Step{step("caps", `grep CapEff /proc/self/status`)})
	// CAP_NET_ADMIN is bit 12: the default set (0xa80425fb) lacks it.
	if res.Status != runner.StatusSuccess || !strings.Contains(out, "00000000a80435fb") {
		t.Errorf("status %s, output:\n%s\nwant NET_ADMIN added to the default capabilities", res.Status, out)
	}
}

// TestSweep: what an owner left behind when it was killed (no Cleanup) is
// removed by the next Engine of that owner, and only that.
func TestSweep(t *testing.T) {
	t.Parallel()
	e, cli, image := engine(t, docker.Options{})
	ws := t.TempDir()
	env := e.Env("job-abandoned", &pipeline.Container{Image: image}, ws, "")
	if err := env.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	other, err := docker.Connect(t.Context(), docker.Options{Owner: "test:someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if n, err := other.Sweep(t.Context()); err != nil || leftovers(t, cli, "job-abandoned") != 1 {
		t.Fatalf("another owner's sweep: %d, %v; it removed our container", n, err)
	}
	again, err := docker.Connect(t.Context(), docker.Options{Owner: "test:" + t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if n, err := again.Sweep(t.Context()); err != nil || n != 1 {
		t.Errorf("sweep: %d, %v; want the one container", n, err)
	}
	if n := leftovers(t, cli, "job-abandoned"); n != 0 {
		t.Errorf("%d left after the sweep", n)
	}
}

// TestGPURequest: a gpu count becomes a device request of the container.
// This machine has no GPU, so the engine creates the container but cannot
// start it; the request is checked on the created container.
func TestGPURequest(t *testing.T) {
	t.Parallel()
	e, cli, image := engine(t, docker.Options{})
	env := e.Env("job-gpu", &pipeline.Container{Image: image, Resources: &pipeline.Resources{GPU: &pipeline.GPU{Count: 2}}}, t.TempDir(), "")
	defer env.Cleanup(context.Background())
	err := env.Prepare(t.Context())
	cs, lerr := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", docker.LabelJob+"=job-gpu")})
	if lerr != nil || len(cs.Items) != 1 {
		t.Fatalf("containers of the job: %v, %v (prepare: %v)", cs.Items, lerr, err)
	}
	in, ierr := cli.ContainerInspect(t.Context(), cs.Items[0].ID, client.ContainerInspectOptions{})
	if ierr != nil {
		t.Fatal(ierr)
	}
	dr := in.Container.HostConfig.DeviceRequests
	if len(dr) != 1 || dr[0].Count != 2 || len(dr[0].Capabilities) != 1 || dr[0].Capabilities[0][0] != "gpu" {
		t.Errorf("device requests %+v, want 2 gpus", dr)
	}
	t.Logf("prepare on a machine without a GPU: %v", err)
}

// TestSweepOwners: a local run sweeps what the runs of its prefix left
// whose owners are gone, and leaves the live ones' alone.
func TestSweepOwners(t *testing.T) {
	t.Parallel()
	_, cli, image := engine(t, docker.Options{})
	prefix := "test:" + t.Name() + ":"
	ws := t.TempDir()
	for _, owner := range []string{"dead", "alive"} {
		e, err := docker.Connect(t.Context(), docker.Options{Owner: prefix + owner})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		env := e.Env("job-owner-"+owner, &pipeline.Container{Image: image}, ws, "")
		if err := env.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer env.Cleanup(context.Background())
	}
	e, err := docker.Connect(t.Context(), docker.Options{Owner: prefix + "me"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	n, err := e.SweepOwners(t.Context(), prefix, func(owner string) bool { return owner == prefix+"dead" })
	if err != nil || n != 1 || leftovers(t, cli, "job-owner-dead") != 0 || leftovers(t, cli, "job-owner-alive") != 1 {
		t.Errorf("swept %d, %v: want the dead owner's container only", n, err)
	}
}

// TestEntrypoint: a container's entrypoint is its main process, given the
// keep-alive command to run; steps run beside it.
func TestEntrypoint(t *testing.T) {
	t.Parallel()
	e, _, image := engine(t, docker.Options{})
	ws := t.TempDir()
	c := &pipeline.Container{Image: image, Entrypoint: []string{"/bin/sh", "-c", `echo "entered with $*" > /tmp/entry; exec "$@"`, "entry"}}
	res, out := run(t, e.Env("job-entry", c, ws, ""), ws, []*spec.Step{step("look", "cat /tmp/entry")})
	if res.Status != runner.StatusSuccess || !strings.Contains(out, "stdout: entered with cat") {
		t.Errorf("status %s, output:\n%s", res.Status, out)
	}
}

// TestContainerExitedAtOnce: a container whose main process exits at once
// (an image without tail, or here an entrypoint that does not keep
// running) fails its step saying what happened, with the exit code and the
// container's last output, not the engine's "cannot exec in a stopped
// state".
func TestContainerExitedAtOnce(t *testing.T) {
	t.Parallel()
	e, _, image := engine(t, docker.Options{})
	ws := t.TempDir()
	c := &pipeline.Container{Image: image, Entrypoint: []string{"/bin/sh", "-c", "echo no keep-alive here; exit 3", "entry"}}
	env := e.Env("job-exited", c, ws, "")
	if err := env.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer env.Cleanup(context.Background())
	var err error
	testkit.WaitFor(t, 10*time.Second, "an exec to fail on the exited container", func() bool {
		_, err = env.Exec(t.Context(), runner.Command{Script: "true", Dir: ws, Stdout: io.Discard, Stderr: io.Discard})
		return err != nil
	})
	for _, want := range []string{"exited with code 3", "(its last output: no keep-alive here)", "container.entrypoint must keep running"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
