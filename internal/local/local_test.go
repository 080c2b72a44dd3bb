package local_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/environment/host"
	"github.com/oxide-ci/oxide/internal/local"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
)

// recorder is a Reporter that keeps the order in which stages completed.
type recorder struct {
	mu        sync.Mutex
	completed []string
}

func (r *recorder) RunStarted(*local.Run)                              {}
func (r *recorder) StageStarted(*local.Run, *plan.Node)                {}
func (r *recorder) RunCompleted(*local.Run)                            {}
func (r *recorder) StepStarted(runner.StepInfo)                        {}
func (r *recorder) StepLines(runner.StepInfo, runner.Stream, [][]byte) {}
func (r *recorder) StepCompleted(runner.StepInfo, runner.StepResult)   {}
func (r *recorder) StageCompleted(_ *local.Run, n *plan.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.completed = append(r.completed, n.Name)
}

// execute parses src and runs it on the host in a fresh workspace.
func execute(t *testing.T, ctx context.Context, src string, opts local.Options) (*local.Run, string) {
	t.Helper()
	return executeTrigger(t, ctx, src, plan.Trigger{Event: "push"}, opts)
}

// executeTrigger is execute with a trigger.
func executeTrigger(t *testing.T, ctx context.Context, src string, trig plan.Trigger, opts local.Options) (*local.Run, string) {
	t.Helper()
	p, err := pipeline.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	r, err := plan.Compile(p, trig)
	if err != nil {
		t.Fatal(err)
	}
	ws := t.TempDir()
	opts.Workspace = ws
	opts.NewEnvironment = func(*plan.Node) runner.Environment { return host.New(host.Options{Grace: 100 * time.Millisecond}) }
	return local.Execute(ctx, "run-1", r, opts, &recorder{}), ws
}

// status returns the status of the stage instance named name.
func status(t *testing.T, r *local.Run, name string) runner.Status {
	t.Helper()
	for _, n := range r.Plan.Nodes {
		if n.Name == name {
			return r.Stages[n.Index].Status
		}
	}
	t.Fatalf("no stage instance %q", name)
	return ""
}

func TestSkipPropagation(t *testing.T) {
	t.Parallel()
	r, _ := executeTrigger(t, t.Context(), `
version: "1"
name: skip
stages:
  - name: fails
    steps: [{name: s, run: "exit 1"}]
  - name: after-failure
    steps: [{name: s, run: "true"}]
  - name: after-after
    steps: [{name: s, run: "true"}]
  - name: cleanup
    depends_on: [fails]
    condition: always()
    steps: [{name: s, run: "true"}]
  - name: on-failure
    depends_on: [fails]
    condition: failure()
    steps: [{name: s, run: "true"}]
  - name: off
    depends_on: []
    condition: branch == 'nope'
    steps: [{name: s, run: "true"}]
  - name: after-off
    depends_on: [off]
    steps: [{name: s, run: "true"}]
`, plan.Trigger{Branch: "main"}, local.Options{})
	for name, want := range map[string]runner.Status{
		"fails":         runner.StatusFailure,
		"after-failure": runner.StatusSkipped,
		"after-after":   runner.StatusSkipped,
		"cleanup":       runner.StatusSuccess,
		"on-failure":    runner.StatusSuccess,
		"off":           runner.StatusSkipped,
		"after-off":     runner.StatusSuccess, // a stage skipped by its condition is no failure
	} {
		if got := status(t, r, name); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	if r.Status != runner.StatusFailure {
		t.Errorf("run: %s, want failure", r.Status)
	}
}

func TestFailFastCancelsSiblings(t *testing.T) {
	t.Parallel()
	r, ws := execute(t, t.Context(), `
version: "1"
name: ff
stages:
  - name: m
    matrix:
      n: [1, 2, 3]
    steps:
      - name: s
        run: |
          if [ ${{ matrix.n }} = 1 ]; then exit 1; fi
          sleep 20
          touch finished-${{ matrix.n }}
`, local.Options{Parallel: 3})
	if got := status(t, r, "m (1)"); got != runner.StatusFailure {
		t.Errorf("m (1): %s", got)
	}
	for _, n := range []string{"m (2)", "m (3)"} {
		if got := status(t, r, n); got != runner.StatusCancelled {
			t.Errorf("%s: %s, want cancelled by fail_fast", n, got)
		}
	}
	if r.Duration > 15*time.Second {
		t.Errorf("the run waited for the cancelled siblings: %s", r.Duration)
	}
	if m, _ := filepath.Glob(filepath.Join(ws, "finished-*")); len(m) > 0 {
		t.Errorf("cancelled instances finished: %v", m)
	}
}

func TestFailFastOff(t *testing.T) {
	t.Parallel()
	r, _ := execute(t, t.Context(), `
version: "1"
name: ff
stages:
  - name: m
    matrix:
      dimensions: {n: [1, 2]}
      fail_fast: false
    steps:
      - name: s
        run: '[ ${{ matrix.n }} = 2 ]'
`, local.Options{Parallel: 1})
	if got := status(t, r, "m (2)"); got != runner.StatusSuccess {
		t.Errorf("m (2): %s, want success: fail_fast is off", got)
	}
}

// TestMaxParallel checks that no two instances run at once with
// max_parallel: 1: each holds a lock directory while it runs, and one that
// finds it taken fails.
func TestMaxParallel(t *testing.T) {
	t.Parallel()
	r, _ := execute(t, t.Context(), `
version: "1"
name: mp
stages:
  - name: m
    matrix:
      dimensions: {n: [1, 2, 3, 4]}
      max_parallel: 1
    steps:
      - name: s
        run: mkdir lock && sleep 0.1 && rmdir lock
`, local.Options{Parallel: 4})
	if r.Status != runner.StatusSuccess {
		for _, n := range r.Plan.Nodes {
			t.Logf("%s: %s", n.Name, r.Stages[n.Index].Status)
		}
		t.Fatalf("run: %s: instances overlapped", r.Status)
	}
}

func TestParallelBoundAndConcurrency(t *testing.T) {
	t.Parallel()
	// Two independent stages meet at a rendezvous: each waits until the
	// other has started. That only succeeds when they run concurrently.
	const src = `
version: "1"
name: par
stages:
  - name: a
    steps:
      - name: s
        run: touch a; for i in $(seq 40); do [ -e b ] && exit 0; sleep 0.05; done; exit 1
  - name: b
    depends_on: []
    steps:
      - name: s
        run: touch b; for i in $(seq 40); do [ -e a ] && exit 0; sleep 0.05; done; exit 1
`
	if r, _ := execute(t, t.Context(), src, local.Options{Parallel: 2}); r.Status != runner.StatusSuccess {
		t.Errorf("--parallel 2: %s, want success", r.Status)
	}
	if r, _ := execute(t, t.Context(), src, local.Options{Parallel: 1}); r.Status != runner.StatusFailure {
		t.Errorf("--parallel 1: %s, want failure: the stages must not overlap", r.Status)
	}
}

func TestPipelineTimeout(t *testing.T) {
	t.Parallel()
	r, _ := execute(t, t.Context(), `
version: "1"
name: slow
stages:
  - name: a
    steps: [{name: s, run: sleep 20}]
  - name: b
    steps: [{name: s, run: "true"}]
`, local.Options{Timeout: 300 * time.Millisecond})
	if r.Status != runner.StatusTimeout {
		t.Errorf("run: %s, want timeout", r.Status)
	}
	if got := status(t, r, "b"); got == runner.StatusSuccess {
		t.Errorf("b ran after the pipeline timed out")
	}
}

func TestInterrupt(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(t.Context())
	time.AfterFunc(300*time.Millisecond, func() { cancel(local.ErrInterrupted) })
	r, _ := execute(t, ctx, `
version: "1"
name: long
stages:
  - name: a
    steps: [{name: s, run: sleep 20}]
`, local.Options{})
	if r.Status != runner.StatusCancelled || status(t, r, "a") != runner.StatusCancelled {
		t.Errorf("run %s, stage %s: want cancelled", r.Status, status(t, r, "a"))
	}
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	const src = `
version: "1"
name: secrets
stages:
  - name: a
    secrets:
      - name: TOKEN
        source: {provider: vault, path: ci/token}
    steps:
      - name: s
        run: printf '%s' "$TOKEN" > token
`
	r, _ := execute(t, t.Context(), src, local.Options{})
	if status(t, r, "a") != runner.StatusFailure || r.Stages[0].Reason == "" {
		t.Fatalf("missing secret: %s (%q), want failure before start", status(t, r, "a"), r.Stages[0].Reason)
	}
	r, ws := execute(t, t.Context(), src, local.Options{Secrets: map[string]string{"ci/token": "v4lue"}})
	if r.Status != runner.StatusSuccess {
		t.Fatalf("run: %s", r.Status)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "token")); string(b) != "v4lue" {
		t.Errorf("the step saw TOKEN=%q, want the secret given by path", b)
	}
}

func TestStepSecretsAndKeys(t *testing.T) {
	t.Parallel()
	r, ws := execute(t, t.Context(), `
version: "1"
name: scoped
stages:
  - name: a
    steps:
      - name: owner
        secrets:
          - name: KEY_ID
            source: {provider: aws_secrets_manager, path: aws/staging}
            key: access_key_id
        run: printf '%s' "$KEY_ID" > owner
      - name: other
        run: printf '%s' "${KEY_ID:-unset}" > other; env > env
`, local.Options{Secrets: map[string]string{"aws/staging": `{"access_key_id":"AKIA123","secret":"x"}`}})
	if r.Status != runner.StatusSuccess {
		t.Fatalf("run: %s (%s)", r.Status, r.Stages[0].Reason)
	}
	for file, want := range map[string]string{"owner": "AKIA123", "other": "unset"} {
		if b, _ := os.ReadFile(filepath.Join(ws, file)); string(b) != want {
			t.Errorf("%s saw %q, want %q", file, b, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "env")); strings.Contains(string(b), "aws/staging") {
		t.Error("a secret given by path became an environment variable")
	}
	r, _ = execute(t, t.Context(), `
version: "1"
name: badkey
stages:
  - name: a
    secrets:
      - name: KEY_ID
        source: {provider: oxide, path: aws/staging}
        key: missing
    steps: [{name: s, run: "true"}]
`, local.Options{Secrets: map[string]string{"aws/staging": `{"access_key_id":"AKIA123"}`}})
	if r.Status != runner.StatusFailure || !strings.Contains(r.Stages[0].Reason, `no key "missing"`) {
		t.Errorf("missing key: %s %q", r.Status, r.Stages[0].Reason)
	}
}
