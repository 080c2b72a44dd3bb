package runner_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/oxide-ci/oxide/internal/testkit"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/environment/host"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
)

// recorder is a Sink that keeps everything it is told.
type recorder struct {
	mu        sync.Mutex
	events    []string                           // "started 0/1", "completed 0 success"
	lines     map[int]map[runner.Stream][]string // step index → stream → lines
	results   map[int]runner.StepResult
	attempts  map[int][]int
	onStarted func(runner.StepInfo)
}

func newRecorder() *recorder {
	return &recorder{lines: map[int]map[runner.Stream][]string{}, results: map[int]runner.StepResult{}, attempts: map[int][]int{}}
}

func (r *recorder) StepStarted(s runner.StepInfo) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf("started %d/%d", s.Index, s.Attempt))
	r.attempts[s.Index] = append(r.attempts[s.Index], s.Attempt)
	hook := r.onStarted
	r.mu.Unlock()
	if hook != nil {
		hook(s)
	}
}

func (r *recorder) StepLines(s runner.StepInfo, stream runner.Stream, lines [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lines[s.Index] == nil {
		r.lines[s.Index] = map[runner.Stream][]string{}
	}
	for _, l := range lines {
		r.lines[s.Index][stream] = append(r.lines[s.Index][stream], string(l))
	}
}

func (r *recorder) StepCompleted(s runner.StepInfo, res runner.StepResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("completed %d/%d %s", s.Index, s.Attempt, res.Status))
	r.results[s.Index] = res
}

func (r *recorder) out(i int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lines[i][runner.Stdout]
}

func (r *recorder) errLines(i int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lines[i][runner.Stderr]
}

// bundle is what a test needs to run jobs.
type bundle struct {
	env       *host.Env
	workspace string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	return &bundle{
		env:       host.New(host.Options{Grace: 300 * time.Millisecond, TempDir: t.TempDir()}),
		workspace: t.TempDir(),
	}
}

func (b *bundle) job(steps ...*spec.Step) *spec.Job {
	return &spec.Job{RunID: "r1", Stage: "test", Steps: steps, Workspace: b.workspace}
}

// run prepares the environment, runs job in it and cleans it up, as the
// orchestrator does.
func (b *bundle) run(t *testing.T, ctx context.Context, job *spec.Job) (runner.JobResult, *recorder) {
	t.Helper()
	rec := newRecorder()
	return b.runWith(t, ctx, job, rec), rec
}

func (b *bundle) runWith(t *testing.T, ctx context.Context, job *spec.Job, sink runner.Sink) runner.JobResult {
	t.Helper()
	if err := b.env.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.env.Cleanup(context.WithoutCancel(ctx)); err != nil {
			t.Error(err)
		}
	}()
	return runner.Run(ctx, b.env, job, sink)
}

func step(id, run string) *spec.Step { return &spec.Step{Name: id, ID: id, Run: run} }

// gone reports whether process pid has exited. An exited orphan may stay
// a zombie when PID 1 does not reap: that counts as gone.
func gone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	testkit.WaitFor(t, 5*time.Second, "pid file "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

func wantStatus(t *testing.T, what string, got, want runner.Status) {
	t.Helper()
	if got != want {
		t.Errorf("%s status = %s, want %s", what, got, want)
	}
}

func TestOutputsFlowToLaterSteps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	gen := step("gen", `
echo "version=1.2.3" >> "$OXIDE_OUTPUT"
{ echo "notes<<EOF"; echo "first line"; echo "second line"; echo "EOF"; } >> "$OXIDE_OUTPUT"`)
	use := step("use", `echo "v=${{ steps.gen.outputs.version }}"; echo "$NOTES"; echo "outcome=${{ steps.gen.outcome }}"`)
	use.Variables = spec.Vars{{Name: "NOTES", Value: "${{ steps.gen.outputs.notes }}"}}
	res, rec := b.run(t, t.Context(), b.job(gen, use))

	wantStatus(t, "job", res.Status, runner.StatusSuccess)
	want := map[string]string{"version": "1.2.3", "notes": "first line\nsecond line"}
	if got := res.Steps[0].Outputs; !equalMap(got, want) {
		t.Errorf("gen outputs = %q, want %q", got, want)
	}
	if got := res.Outputs["gen"]; !equalMap(got, want) {
		t.Errorf("JobResult.Outputs[gen] = %q, want %q", got, want)
	}
	if got, want := rec.out(1), []string{"v=1.2.3", "first line", "second line", "outcome=success"}; !slices.Equal(got, want) {
		t.Errorf("use printed %q, want %q", got, want)
	}
}

// An output holding a secret is masked wherever the runner reports it,
// with a warning, while the job's later steps get it as written.
func TestOutputsWithSecretsMasked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	gen := step("gen", `echo "out=url?t=$SEC&x=1" >> "$OXIDE_OUTPUT"; echo "plain=hello" >> "$OXIDE_OUTPUT"`)
	use := step("use", `[ "${{ steps.gen.outputs.out }}" = "url?t=$SEC&x=1" ] && echo "later step got the real value"`)
	job := b.job(gen, use)
	job.Secrets = []spec.Secret{{Name: "SEC", Value: "s3cr3t-t0ken", Masked: true}}
	res, rec := b.run(t, t.Context(), job)

	wantStatus(t, "job", res.Status, runner.StatusSuccess)
	want := map[string]string{"out": "url?t=***&x=1", "plain": "hello"}
	if got := res.Steps[0].Outputs; !equalMap(got, want) {
		t.Errorf("StepResult outputs = %q, want %q", got, want)
	}
	if got := rec.results[0].Outputs; !equalMap(got, want) {
		t.Errorf("outputs given to the Sink = %q, want %q", got, want)
	}
	if got := res.Outputs["gen"]; !equalMap(got, want) {
		t.Errorf("JobResult.Outputs[gen] = %q, want %q", got, want)
	}
	if got, want := rec.errLines(0), []string{"output out holds a secret: masked"}; !slices.Equal(got, want) {
		t.Errorf("gen's stderr = %q, want %q", got, want)
	}
	if got, want := rec.out(1), []string{"later step got the real value"}; !slices.Equal(got, want) {
		t.Errorf("use printed %q, want %q", got, want)
	}
}

func equalMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestOutputsFromEarlierStages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.job(step("s", `echo "${{ steps.build.outputs.image }}"`))
	job.Outputs = map[string]map[string]string{"build": {"image": "app:1"}}
	res, rec := b.run(t, t.Context(), job)
	wantStatus(t, "job", res.Status, runner.StatusSuccess)
	if got := rec.out(0); !slices.Equal(got, []string{"app:1"}) {
		t.Errorf("printed %q, want [app:1]", got)
	}
}

func TestConditions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fail := step("fail", "echo before; exit 3")
	skipped := step("skipped", "echo must not run")
	onFailure := step("on-failure", "echo cleanup")
	onFailure.Condition = &spec.Condition{If: "${{ failure() }}"}
	always := step("always", "echo always")
	always.Condition = &spec.Condition{If: "always()"}
	unless := step("unless", "echo must not run")
	unless.Condition = &spec.Condition{If: "always()", Unless: "${{ matrix.os == 'linux' }}"}
	unlessFalse := step("unless-false", "echo ran")
	unlessFalse.Condition = &spec.Condition{Unless: "matrix.os == 'windows'"}
	job := b.job(fail, skipped, onFailure, always, unless, unlessFalse)
	job.Matrix = map[string]any{"os": "linux"}
	res, rec := b.run(t, t.Context(), job)

	wantStatus(t, "job", res.Status, runner.StatusFailure)
	r0 := res.Steps[0]
	wantStatus(t, "fail", r0.Status, runner.StatusFailure)
	if r0.ExitCode != 3 || r0.Err != nil {
		t.Errorf("fail: exit code %d, err %v; want 3, nil (a step failure, not an infrastructure one)", r0.ExitCode, r0.Err)
	}
	for i, want := range []runner.Status{runner.StatusSkipped, runner.StatusSuccess, runner.StatusSuccess, runner.StatusSkipped, runner.StatusSkipped} {
		wantStatus(t, job.Steps[i+1].ID, res.Steps[i+1].Status, want)
	}
	if err := res.Steps[1].Err; !errors.Is(err, runner.ErrConditionFalse) {
		t.Errorf("skipped step's Err = %v, want ErrConditionFalse", err)
	}
	// unless-false has no if: the implicit success() skips it after a failure.
	if got := rec.out(2); !slices.Equal(got, []string{"cleanup"}) {
		t.Errorf("on-failure printed %q", got)
	}
	for _, e := range rec.events {
		if e == "started 1/1" || e == "started 4/1" {
			t.Errorf("skipped step got %q", e)
		}
	}
	if !slices.Contains(rec.events, "completed 1/1 skipped") {
		t.Errorf("events %q lack the skipped step's completion", rec.events)
	}
}

func TestUnlessRunsWhenFalse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("s", "echo ran")
	s.Condition = &spec.Condition{Unless: "${{ variables.SKIP == 'yes' }}"}
	job := b.job(s)
	job.Variables = spec.Vars{{Name: "SKIP", Value: "no"}}
	res, rec := b.run(t, t.Context(), job)
	wantStatus(t, "s", res.Steps[0].Status, runner.StatusSuccess)
	if got := rec.out(0); !slices.Equal(got, []string{"ran"}) {
		t.Errorf("printed %q", got)
	}
}

func TestContinueOnError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	flaky := step("flaky", "exit 1")
	flaky.ContinueOnError = "true"
	experimental := step("experimental", "exit 2")
	experimental.ContinueOnError = "${{ matrix.experimental }}"
	next := step("next", `echo "${{ steps.flaky.outcome }} ${{ steps.flaky.conclusion }}"`)
	job := b.job(flaky, experimental, next)
	job.Matrix = map[string]any{"experimental": true}
	res, rec := b.run(t, t.Context(), job)

	wantStatus(t, "job", res.Status, runner.StatusSuccess)
	wantStatus(t, "flaky", res.Steps[0].Status, runner.StatusFailure)
	wantStatus(t, "experimental", res.Steps[1].Status, runner.StatusFailure)
	if !res.Steps[0].ContinueOnError || !res.Steps[1].ContinueOnError {
		t.Errorf("ContinueOnError not reported: %+v", res.Steps[:2])
	}
	if got := rec.out(2); !slices.Equal(got, []string{"failure success"}) {
		t.Errorf("next printed %q", got)
	}

	// "false" from an expression keeps the failure.
	b = setup(t)
	strict := step("strict", "exit 1")
	strict.ContinueOnError = "${{ matrix.experimental }}"
	job = b.job(strict, step("after", "echo no"))
	job.Matrix = map[string]any{"experimental": false}
	res, _ = b.run(t, t.Context(), job)
	wantStatus(t, "job", res.Status, runner.StatusFailure)
	wantStatus(t, "after", res.Steps[1].Status, runner.StatusSkipped)
}

func TestRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Succeeds on the third attempt.
	flaky := step("flaky", `n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo "attempt $n"; [ "$n" -ge 3 ]`)
	flaky.Retry = &spec.Retry{MaxAttempts: 5, Delay: time.Millisecond, ExponentialBackoff: true, RetryOn: []string{"failure"}}
	broken := step("broken", "exit 1")
	broken.Retry = &spec.Retry{MaxAttempts: 3}
	broken.Condition = &spec.Condition{If: "always()"}
	timeoutOnly := step("timeout-only", "exit 1")
	timeoutOnly.Retry = &spec.Retry{MaxAttempts: 3, RetryOn: []string{"timeout"}}
	timeoutOnly.Condition = &spec.Condition{If: "always()"}
	res, rec := b.run(t, t.Context(), b.job(flaky, broken, timeoutOnly))

	wantStatus(t, "flaky", res.Steps[0].Status, runner.StatusSuccess)
	if got := rec.attempts[0]; !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("flaky attempts = %v, want [1 2 3]", got)
	}
	if res.Steps[0].Attempts != 3 {
		t.Errorf("flaky Attempts = %d, want 3", res.Steps[0].Attempts)
	}
	wantErr := []string{"retrying in 1ms (attempt 2/5)", "retrying in 2ms (attempt 3/5)"}
	if got := rec.errLines(0); !slices.Equal(got, wantErr) {
		t.Errorf("flaky stderr = %q, want %q", got, wantErr)
	}
	if got := rec.out(0); !slices.Equal(got, []string{"attempt 1", "attempt 2", "attempt 3"}) {
		t.Errorf("flaky stdout = %q", got)
	}
	wantStatus(t, "broken", res.Steps[1].Status, runner.StatusFailure)
	if got := rec.attempts[1]; !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("broken attempts = %v, want [1 2 3]", got)
	}
	if got := rec.attempts[2]; !slices.Equal(got, []int{1}) {
		t.Errorf("timeout-only attempts = %v, want [1]", got)
	}
	if n := strings.Count(strings.Join(rec.events, "\n"), "completed 0/"); n != 1 || !slices.Contains(rec.events, "completed 0/3 success") {
		t.Errorf("events %q: want flaky completed once, after attempt 3", rec.events)
	}
}

func TestRetryOnTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("slow", `n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ "$n" -ge 2 ] || sleep 30`)
	s.Timeout = 200 * time.Millisecond
	s.Retry = &spec.Retry{MaxAttempts: 3, RetryOn: []string{"timeout"}}
	res, rec := b.run(t, t.Context(), b.job(s))
	wantStatus(t, "slow", res.Steps[0].Status, runner.StatusSuccess)
	if got := rec.attempts[0]; !slices.Equal(got, []int{1, 2}) {
		t.Errorf("attempts = %v, want [1 2]", got)
	}
}

func TestStepTimeoutKillsGrandchild(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("slow", `sleep 30 & echo $! > sleep.pid; wait`)
	s.Timeout = 300 * time.Millisecond
	after := step("after", "echo no")
	start := time.Now()
	res, _ := b.run(t, t.Context(), b.job(s, after))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %s", d)
	}
	wantStatus(t, "slow", res.Steps[0].Status, runner.StatusTimeout)
	if !errors.Is(res.Steps[0].Err, runner.ErrStepTimeout) {
		t.Errorf("Err = %v, want ErrStepTimeout", res.Steps[0].Err)
	}
	wantStatus(t, "after", res.Steps[1].Status, runner.StatusSkipped)
	wantStatus(t, "job", res.Status, runner.StatusTimeout)
	pid := readPid(t, filepath.Join(b.workspace, "sleep.pid"))
	testkit.WaitFor(t, 5*time.Second, "sleep to die", func() bool { return gone(pid) })
}

func TestSIGTERMIgnoredGetsSIGKILL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("stubborn", `trap '' TERM; sleep 30 & echo $! > sleep.pid; wait $!; echo "survived TERM"; sleep 30`)
	s.Timeout = 200 * time.Millisecond
	start := time.Now()
	res, rec := b.run(t, t.Context(), b.job(s))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %s", d)
	}
	r := res.Steps[0]
	wantStatus(t, "stubborn", r.Status, runner.StatusTimeout)
	if r.ExitCode != 128+9 {
		t.Errorf("exit code = %d, want 137 (SIGKILL)", r.ExitCode)
	}
	if slices.Contains(rec.out(0), "survived TERM") {
		t.Errorf("the sleep ignoring SIGTERM was not what ended (stdout %q)", rec.out(0))
	}
	pid := readPid(t, filepath.Join(b.workspace, "sleep.pid"))
	testkit.WaitFor(t, 5*time.Second, "sleep to die", func() bool { return gone(pid) })
}

func TestParentCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	errStop := errors.New("user pressed Ctrl-C")
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	retried := step("long", "sleep 30")
	retried.Retry = &spec.Retry{MaxAttempts: 3, RetryOn: []string{"cancelled", "failure"}}
	cleanup := step("cleanup", "echo no")
	cleanup.Condition = &spec.Condition{If: "always()"}
	rec := newRecorder()
	rec.onStarted = func(s runner.StepInfo) {
		if s.Index == 0 {
			time.AfterFunc(100*time.Millisecond, func() { cancel(errStop) })
		}
	}
	res := b.runWith(t, ctx, b.job(retried, cleanup), rec)

	wantStatus(t, "job", res.Status, runner.StatusCancelled)
	wantStatus(t, "long", res.Steps[0].Status, runner.StatusCancelled)
	if !errors.Is(res.Steps[0].Err, errStop) {
		t.Errorf("Err = %v, want the caller's cause", res.Steps[0].Err)
	}
	if got := rec.attempts[0]; !slices.Equal(got, []int{1}) {
		t.Errorf("attempts = %v: a cancel by the caller must not be retried", got)
	}
	wantStatus(t, "cleanup", res.Steps[1].Status, runner.StatusCancelled)
	if len(rec.attempts[1]) != 0 {
		t.Errorf("cleanup started after the job was cancelled")
	}
}

func TestJobTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.job(step("ok", "true"), step("slow", "sleep 30"), step("never", "true"))
	job.Timeout = 500 * time.Millisecond
	res, _ := b.run(t, t.Context(), job)
	wantStatus(t, "job", res.Status, runner.StatusTimeout)
	wantStatus(t, "ok", res.Steps[0].Status, runner.StatusSuccess)
	wantStatus(t, "slow", res.Steps[1].Status, runner.StatusTimeout)
	if !errors.Is(res.Steps[1].Err, runner.ErrJobTimeout) {
		t.Errorf("Err = %v, want ErrJobTimeout", res.Steps[1].Err)
	}
	wantStatus(t, "never", res.Steps[2].Status, runner.StatusCancelled)
}

func TestMaskSecrets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.job(step("s", `echo "token is $TOKEN"; echo "$MULTI"; echo "$PLAIN"; echo "err $TOKEN" >&2; echo "${{ secrets.TOKEN }}"`))
	job.Secrets = []spec.Secret{
		{Name: "TOKEN", Value: "s3cr3t-t0ken", Masked: true},
		{Name: "MULTI", Value: "-----BEGIN KEY-----\nAAAABBBB\n-----END KEY-----", Masked: true},
		{Name: "PLAIN", Value: "not-a-secret", Masked: false},
	}
	res, rec := b.run(t, t.Context(), job)
	wantStatus(t, "s", res.Steps[0].Status, runner.StatusSuccess)
	want := []string{"token is ***", "***", "***", "***", "not-a-secret", "***"}
	if got := rec.out(0); !slices.Equal(got, want) {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got := rec.errLines(0); !slices.Equal(got, []string{"err ***"}) {
		t.Errorf("stderr = %q", got)
	}
}

func TestParallelStepsRunTogether(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Each step waits until all three have started: run one after the
	// other they would time out.
	const script = `touch started-%[1]d
for i in $(seq 100); do [ -e started-0 ] && [ -e started-1 ] && [ -e started-2 ] && break; sleep 0.05; done
[ -e started-0 ] && [ -e started-1 ] && [ -e started-2 ] && echo "all started"
exit %[2]d`
	job := b.job(
		step("a", fmt.Sprintf(script, 0, 0)),
		step("b", fmt.Sprintf(script, 1, 1)),
		step("c", fmt.Sprintf(script, 2, 0)),
	)
	job.Parallel = true
	res, rec := b.run(t, t.Context(), job)
	wantStatus(t, "job", res.Status, runner.StatusFailure)
	for i, want := range []runner.Status{runner.StatusSuccess, runner.StatusFailure, runner.StatusSuccess} {
		wantStatus(t, job.Steps[i].ID, res.Steps[i].Status, want)
		if got := rec.out(i); !slices.Equal(got, []string{"all started"}) {
			t.Errorf("step %d printed %q", i, got)
		}
	}
}

func TestShells(t *testing.T) {
	t.Parallel()
	tests := []struct {
		shell, script string
		status        runner.Status
		out           []string
	}{
		{"", `echo "bash $BASH_VERSION" | cut -c1-4`, runner.StatusSuccess, []string{"bash"}},
		{"bash", "false | true", runner.StatusFailure, nil},            // pipefail
		{"bash", "false\necho not reached", runner.StatusFailure, nil}, // -e
		{"sh", "echo sh; false; echo not reached", runner.StatusFailure, []string{"sh"}},
		{"python", "import sys\nprint('py', sys.version_info[0])", runner.StatusSuccess, []string{"py 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.shell+"/"+tt.script, func(t *testing.T) {
			t.Parallel()
			if tt.shell == "python" {
				if _, err := exec.LookPath("python3"); err != nil {
					t.Skip("no python3")
				}
			}
			b := setup(t)
			s := step("s", tt.script)
			s.Shell = tt.shell
			res, rec := b.run(t, t.Context(), b.job(s))
			wantStatus(t, "step", res.Steps[0].Status, tt.status)
			if got := rec.out(0); !slices.Equal(got, tt.out) {
				t.Errorf("stdout = %q, want %q (stderr %q)", got, tt.out, rec.errLines(0))
			}
		})
	}
}

func TestUnknownShell(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("s", "Write-Host hi")
	s.Shell = "pwsh"
	res, _ := b.run(t, t.Context(), b.job(s))
	r := res.Steps[0]
	wantStatus(t, "step", r.Status, runner.StatusFailure)
	if !errors.Is(r.Err, host.ErrUnknownShell) {
		t.Errorf("Err = %v, want ErrUnknownShell", r.Err)
	}
}

func TestWorkingDirectory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := os.MkdirAll(filepath.Join(b.workspace, "sub", "linux"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := step("s", "pwd")
	s.WorkingDir = "sub/${{ matrix.os }}"
	missing := step("missing", "pwd")
	missing.WorkingDir = "nope"
	missing.Condition = &spec.Condition{If: "always()"}
	job := b.job(step("root", "pwd"), s, missing)
	job.Matrix = map[string]any{"os": "linux"}
	res, rec := b.run(t, t.Context(), job)
	if got := rec.out(0); !slices.Equal(got, []string{b.workspace}) {
		t.Errorf("root pwd = %q, want %q", got, b.workspace)
	}
	if got, want := rec.out(1), []string{filepath.Join(b.workspace, "sub", "linux")}; !slices.Equal(got, want) {
		t.Errorf("pwd = %q, want %q", got, want)
	}
	// A missing directory is an infrastructure failure, not an exit code.
	r := res.Steps[2]
	wantStatus(t, "missing", r.Status, runner.StatusFailure)
	if r.Err == nil || r.ExitCode != -1 {
		t.Errorf("missing: err %v, exit code %d; want an error and -1", r.Err, r.ExitCode)
	}
	if len(rec.errLines(2)) == 0 {
		t.Errorf("the infrastructure error was not printed")
	}
}

func TestLines(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.job(
		step("no-final-newline", `printf 'a\nb'`),
		step("crlf", `printf 'x\r\ny\r\n\r\nz'`),
		step("long", `head -c 100000 /dev/zero | tr '\0' a; echo; echo end`),
		step("empty", `true`),
	)
	_, rec := b.run(t, t.Context(), job)
	if got := rec.out(0); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("no-final-newline: %q", got)
	}
	if got := rec.out(1); !slices.Equal(got, []string{"x", "y", "", "z"}) {
		t.Errorf("crlf: %q", got)
	}
	long := rec.out(2)
	if len(long) != 3 || len(long[0]) != 64<<10 || len(long[1]) != 100000-64<<10 || long[2] != "end" {
		lens := []int{}
		for _, l := range long {
			lens = append(lens, len(l))
		}
		t.Errorf("long: line lengths %v, want [65536 34464 3]", lens)
	}
	if got := rec.out(3); len(got) != 0 {
		t.Errorf("empty: %q", got)
	}
}

func TestManyLinesInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, rec := b.run(t, t.Context(), b.job(step("seq", "seq 1 200000")))
	wantStatus(t, "seq", res.Steps[0].Status, runner.StatusSuccess)
	got := rec.out(0)
	if len(got) != 200000 {
		t.Fatalf("got %d lines, want 200000", len(got))
	}
	for i, l := range got {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("line %d = %q, want %d", i, l, i+1)
		}
	}
}

func TestStepEnvironment(t *testing.T) {
	t.Setenv("OXIDE_TEST_MUST_NOT_LEAK", "leak")
	t.Setenv("LANG", "C.UTF-8")
	b := setup(t)
	s := step("s", `env | sort`)
	s.Variables = spec.Vars{{Name: "STEP_VAR", Value: "step"}, {Name: "SHARED", Value: "from-step ${{ variables.JOB_VAR }}"}}
	job := b.job(s)
	job.Variables = spec.Vars{{Name: "JOB_VAR", Value: "job"}, {Name: "SHARED", Value: "from-job"}}
	job.Pipeline, job.Git = "ci", spec.Git{Branch: "main", Event: "push"}
	job.Matrix = map[string]any{"go": 1.25, "os": "linux"}
	job.Variables = append(job.Variables, spec.Var{Name: "OXIDE_OUTPUT", Value: "/not/this"})
	job.Secrets = []spec.Secret{{Name: "API_KEY", Value: "k", Masked: false}}
	res, rec := b.run(t, t.Context(), job)
	wantStatus(t, "s", res.Steps[0].Status, runner.StatusSuccess)
	env := map[string]string{}
	for _, kv := range rec.out(0) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, want := range map[string]string{
		"CI": "true", "OXIDE": "true", "OXIDE_RUN_ID": "r1", "JOB_VAR": "job", "STEP_VAR": "step",
		"OXIDE_PIPELINE": "ci", "OXIDE_STAGE": "test", "OXIDE_WORKSPACE": b.workspace, "OXIDE_BRANCH": "main",
		"OXIDE_EVENT": "push", "OXIDE_MATRIX_GO": "1.25", "OXIDE_MATRIX_OS": "linux", "OXIDE_ATTEMPT": "1",
		"SHARED": "from-step job", "API_KEY": "k", "LANG": "C.UTF-8", "PATH": os.Getenv("PATH"),
	} {
		if env[k] != want {
			t.Errorf("$%s = %q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["OXIDE_TEST_MUST_NOT_LEAK"]; ok {
		t.Errorf("the runner's own environment leaked into the step")
	}
	if out := env["OXIDE_OUTPUT"]; out == "" || out == "/not/this" {
		t.Errorf("OXIDE_OUTPUT = %q", out)
	}
}

func TestPluginStep(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := &spec.Step{Name: "checkout", Plugin: "oxide/checkout@v1"}
	res, _ := b.run(t, t.Context(), b.job(p, step("after", "echo no")))
	r := res.Steps[0]
	wantStatus(t, "plugin", r.Status, runner.StatusFailure)
	if !errors.Is(r.Err, runner.ErrPluginUnavailable) || !strings.Contains(r.Err.Error(), `(plugin "oxide/checkout@v1")`) {
		t.Errorf("Err = %v", r.Err)
	}
	wantStatus(t, "after", res.Steps[1].Status, runner.StatusSkipped)
}

func TestExpressionError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, rec := b.run(t, t.Context(), b.job(step("bad", "echo ${{ steps. }}")))
	r := res.Steps[0]
	wantStatus(t, "bad", r.Status, runner.StatusFailure)
	if r.Err == nil {
		t.Fatal("no Err")
	}
	if got := rec.errLines(0); len(got) == 0 || !strings.Contains(got[0], "run:") {
		t.Errorf("stderr = %q, want the expression error", got)
	}
	if len(rec.out(0)) != 0 {
		t.Errorf("the step ran")
	}
}

func TestBackgroundProcessDoesNotHoldTheStep(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := time.Now()
	res, rec := b.run(t, t.Context(), b.job(
		step("server", `sleep 30 & echo $! > server.pid; echo started`),
		step("next", `echo next`),
	))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %s", d)
	}
	wantStatus(t, "job", res.Status, runner.StatusSuccess)
	if got := rec.out(0); !slices.Equal(got, []string{"started"}) {
		t.Errorf("server printed %q", got)
	}
	// Cleanup kills what the steps left running.
	pid := readPid(t, filepath.Join(b.workspace, "server.pid"))
	testkit.WaitFor(t, 5*time.Second, "background sleep to die", func() bool { return gone(pid) })
}

// runJob runs a job the way the orchestrator does: Prepare, Run, Cleanup.
func runJob(b *testing.B, env runner.Environment, job *spec.Job) {
	ctx := context.Background()
	if err := env.Prepare(ctx); err != nil {
		b.Fatal(err)
	}
	res := runner.Run(ctx, env, job, discard{})
	if err := env.Cleanup(ctx); err != nil {
		b.Fatal(err)
	}
	if res.Status != runner.StatusSuccess {
		b.Fatal(res.Status)
	}
}

// discard is a Sink that drops everything.
type discard struct{}

func (discard) StepStarted(runner.StepInfo)                        {}
func (discard) StepLines(runner.StepInfo, runner.Stream, [][]byte) {}
func (discard) StepCompleted(runner.StepInfo, runner.StepResult)   {}

func BenchmarkStepLines200k(b *testing.B) {
	env := host.New(host.Options{TempDir: b.TempDir()})
	job := &spec.Job{Steps: []*spec.Step{step("seq", "seq 1 200000")}, Workspace: b.TempDir()}
	job.Secrets = []spec.Secret{{Name: "T", Value: "s3cr3t-t0ken", Masked: true}}
	for b.Loop() {
		runJob(b, env, job)
	}
	b.ReportMetric(float64(200000*b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkStepOverhead compares one-step jobs running `true` with bash
// running the same script the same way (same environment, its output read
// through pipes by two goroutines, as any runner that captures output
// must; "bash" writes to /dev/null). The difference is the runner's cost
// per step.
func BenchmarkStepOverhead(b *testing.B) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		b.Skip("no bash")
	}
	script := filepath.Join(b.TempDir(), "s.sh")
	if err := os.WriteFile(script, []byte("true\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "SHELL":
			env = append(env, kv)
		}
	}
	env = append(env, "CI=true", "OXIDE=true")
	bashRun := func(b *testing.B, pipes bool) {
		for b.Loop() {
			c := exec.Command(bash, "--noprofile", "--norc", "-e", "-o", "pipefail", script)
			c.Env = env
			if !pipes {
				if err := c.Run(); err != nil {
					b.Fatal(err)
				}
				continue
			}
			or, ow, _ := os.Pipe()
			er, ew, _ := os.Pipe()
			var wg sync.WaitGroup
			wg.Go(func() { io.Copy(io.Discard, or) })
			wg.Go(func() { io.Copy(io.Discard, er) })
			c.Stdout, c.Stderr = ow, ew
			err := c.Run()
			ow.Close()
			ew.Close()
			wg.Wait()
			or.Close()
			er.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("bash", func(b *testing.B) { bashRun(b, false) })
	b.Run("bash-pipes", func(b *testing.B) { bashRun(b, true) })
	b.Run("runner-job-per-step", func(b *testing.B) {
		job := &spec.Job{Steps: []*spec.Step{step("t", "true")}, Workspace: b.TempDir()}
		tmp := b.TempDir()
		for b.Loop() {
			runJob(b, host.New(host.Options{TempDir: tmp}), job)
		}
	})
	b.Run("runner-20-steps-per-job", func(b *testing.B) {
		job := &spec.Job{Workspace: b.TempDir()}
		for i := range 20 {
			job.Steps = append(job.Steps, step("t"+strconv.Itoa(i), "true"))
		}
		tmp := b.TempDir()
		for b.Loop() {
			runJob(b, host.New(host.Options{TempDir: tmp}), job)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*20), "ns/step")
	})
}

func TestChattyBackgroundProcess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := time.Now()
	res, rec := b.run(t, t.Context(), b.job(
		step("chatty", `(while :; do echo tick; sleep 0.01; done) & echo $! > chatty.pid; echo started`),
		step("next", `echo next`),
	))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %s", d)
	}
	wantStatus(t, "job", res.Status, runner.StatusSuccess)
	if got := rec.out(1); !slices.Equal(got, []string{"next"}) {
		t.Errorf("next printed %q", got)
	}
	pid := readPid(t, filepath.Join(b.workspace, "chatty.pid"))
	testkit.WaitFor(t, 5*time.Second, "background loop to die", func() bool { return gone(pid) })
}

// plainEnv hides the ScratchDirer of the host environment, so that the
// runner makes its own directory for the $OXIDE_OUTPUT files.
type plainEnv struct{ runner.Environment }

func TestEnvironmentWithoutScratchDir(t *testing.T) {
	t.Parallel()
	b := setup(t)
	env := plainEnv{b.env}
	if err := env.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer env.Cleanup(context.Background())
	job := b.job(step("a", `echo "k=v" >> "$OXIDE_OUTPUT"; echo "$OXIDE_OUTPUT" > out.path`), step("b", `echo "${{ steps.a.outputs.k }}"`))
	rec := newRecorder()
	res := runner.Run(t.Context(), env, job, rec)
	wantStatus(t, "job", res.Status, runner.StatusSuccess)
	if got := rec.out(1); !slices.Equal(got, []string{"v"}) {
		t.Errorf("b printed %q", got)
	}
	path, err := os.ReadFile(filepath.Join(b.workspace, "out.path"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(strings.TrimSpace(string(path))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the runner's own directory was not removed: %v", err)
	}
}

// TestStepsOfAStageAfterAFailure: as in GitHub Actions, the status
// functions of a job's steps see the job's own steps, not the stages it
// depends on: a cleanup stage that runs after a failure runs its steps;
// its job's own condition sees the dependencies' failure.
func TestStepsOfAStageAfterAFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	notify := step("notify", "echo notify")
	notify.Condition = &spec.Condition{If: "failure()"}
	job := b.job(step("cleanup", "echo cleaning"), notify)
	job.DepsFailed = true // an earlier stage failed
	res, rec := b.run(t, t.Context(), job)
	wantStatus(t, "cleanup", res.Steps[0].Status, runner.StatusSuccess)
	wantStatus(t, "notify", res.Steps[1].Status, runner.StatusSkipped)
	wantStatus(t, "job", res.Status, runner.StatusSuccess)
	if got := rec.out(0); !slices.Equal(got, []string{"cleaning"}) {
		t.Errorf("cleanup printed %q", got)
	}

	job = b.job(step("after", "echo ran"))
	job.DepsFailed, job.Runner.Name = true, "w1"
	job.Condition = &spec.Condition{If: "failure() && runner.name == 'w1'"}
	if res, _ := b.run(t, t.Context(), job); res.Status != runner.StatusSuccess || res.Steps[0].Status != runner.StatusSuccess {
		t.Errorf("failure() in the job's condition after a failed dependency: job %s, step %s", res.Status, res.Steps[0].Status)
	}
	job.DepsFailed = false
	if res, _ := b.run(t, t.Context(), job); res.Status != runner.StatusSkipped || res.Reason == "" {
		t.Errorf("failure() in the job's condition without one: job %s (%q)", res.Status, res.Reason)
	}
}
