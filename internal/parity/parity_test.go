// Package parity_test is the parity suite: every pipeline in examples/ and
// in testdata/ runs under oxide run (internal/local, in this process), on a
// real server's own agent (its child process, as another user when the
// tests run as root), and on a real oxide-agent process connected to a
// real server, on SQLite and (with OXIDE_TEST_POSTGRES) on a real
// PostgreSQL. It compares, stage instance by stage instance, the
// statuses, every step's status, exit code and outputs, the OXIDE_*
// variables and the log lines: any difference fails.
package parity_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/oxide-ci/oxide/internal/agent"
	"github.com/oxide-ci/oxide/internal/agent/agentcmd"
	"github.com/oxide-ci/oxide/internal/environment/host"
	"github.com/oxide-ci/oxide/internal/local"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/server"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres/pgtest"
	"github.com/oxide-ci/oxide/internal/testkit"
	"github.com/oxide-ci/oxide/sdk"
)

// agentBin is oxide-agent, built once for the suite.
var agentBin string

func TestMain(m *testing.M) {
	agentcmd.RunIfChild("test") // the own agent of the servers the tests start
	dir, err := os.MkdirTemp("", "oxide-parity-")
	if err != nil {
		panic(err)
	}
	agentBin = filepath.Join(dir, "oxide-agent")
	cmd := exec.Command("go", "build", "-o", agentBin, "../../cmd/oxide-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/oxide-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// A parity case: a pipeline and what triggers it.
type pcase struct {
	name    string
	yaml    string
	trigger plan.Trigger
}

// secretValue is the value of the environment secrets of the cases:
// oxide run and the workers read it from their environment.
const secretValue = "s3cr3t-parity-v4lue"

func cases(t *testing.T) []pcase {
	t.Helper()
	var out []pcase
	for _, glob := range []string{"../../examples/*.yaml", "testdata/*.yaml"} {
		files, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, pcase{
				name: filepath.Base(f), yaml: string(b),
				trigger: plan.Trigger{Branch: "main", Variables: map[string]string{"K": "from-trigger"}},
			})
		}
	}
	return out
}

// result is what a run did, as compared across paths.
type result struct {
	Status string
	Stages map[string]stage // by instance name
}

type stage struct {
	Status string
	Reason string
	Steps  []step
}

type step struct {
	Name     string
	Status   string
	ExitCode string // "-" when the step has none
	Outputs  map[string]string
	Stdout   []string
	Stderr   []string
}

func TestParity(t *testing.T) {
	// The retry counters' directory, the same for every path; the server's
	// own agent may run as another user.
	tmp := testkit.SharedDir(t)
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	t.Setenv("API_TOKEN", secretValue) // examples/secrets.yaml
	t.Setenv("PARITY_SECRET", secretValue)
	admin := "oxt_parity-admin-token-0123456789"
	t.Setenv("OXIDE_ADMIN_TOKEN", admin)
	cs := cases(t)

	want := map[string]result{}
	for _, c := range cs {
		want[c.name] = runLocal(t, c)
	}
	checkSemantics(t, want)
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := func() string { return "" }
			if backend == "postgres" {
				dsn = func() string { return pgtest.DSN(t) }
			}
			own := startServer(t, admin, dsn(), 1, "")
			remote := startServer(t, admin, dsn(), 0, testkit.FreeAddr(t))
			startAgent(t, remote)
			for name, srv := range map[string]*testServer{"server worker": own, "agent": remote} {
				t.Run(name, func(t *testing.T) {
					for _, c := range cs {
						got := runRemote(t, srv, c)
						if diff := compare(want[c.name], got); diff != "" {
							t.Errorf("%s: oxide run and the %s differ:\n%s", c.name, name, diff)
						}
					}
				})
			}
		})
	}
}

// checkSemantics checks that oxide run does what the test pipelines are
// about, so that the suite does not compare two runs equally wrong.
func checkSemantics(t *testing.T, res map[string]result) {
	t.Helper()
	for _, c := range []struct {
		file, stage, step, want string // step "": the stage's status
	}{
		{"flow.yaml", "build", "", "success"},
		{"flow.yaml", "build", "flaky-but-ok", "failure 3 [this one fails]"},
		{"flow.yaml", "test", "", "failure"},
		{"flow.yaml", "test", "fails", "failure 7 [] [to stderr]"},
		{"flow.yaml", "test", "after-failure", "skipped"},
		{"flow.yaml", "test", "on-failure", "success 0 [a step saw the failure]"},
		{"flow.yaml", "package", "", "skipped"},
		{"flow.yaml", "cleanup", "tidy", "success 0 [cleaning up]"},
		{"flow.yaml", "cleanup", "notes", "success 0 [line one line two]"},
		{"flow.yaml", "notify", "tell", "success 0 [the run failed]"},
		{"flow.yaml", "on-main", "", "success"},
		{"flow.yaml", "not-on-dev", "", "skipped"},
		{"flow.yaml", "on-plan9", "", "skipped"},
		{"flow.yaml", "on-this-os", "yes", "success 0 [on " + runtime.GOOS + "]"},
		{"retry.yaml", "flaky-stage", "count", "success 0 [attempt 1 of the stage attempt 2 of the stage]"},
		{"retry.yaml", "flaky-step", "count", "success 0 [third time lucky] [retrying in 1s (attempt 2/3) retrying in 2s (attempt 3/3)]"},
		{"retry.yaml", "slow", "", "timeout"},
		{"retry.yaml", "slow", "sleeps", "timeout"},
		{"retry.yaml", "secret", "print", "success 0 [token=*** ***]"},
		{"retry.yaml", "secret", "encoded", "success 0 [***] [output url holds a secret: masked]"},
		{"retry.yaml", "secret", "same-job", "success 0 [the real value]"},
		{"failfast.yaml", "fast (1)", "", "failure"},
		{"failfast.yaml", "fast (2)", "", "cancelled"},
		{"failfast.yaml", "fast (3)", "", "cancelled"},
		{"failfast.yaml", "slow (2)", "try", "success 0 [instance 2]"},
		{"failfast.yaml", "after", "report", "success 0 [after the matrices]"},
		{"builtins.yaml", "env", "step-vars", "success 0 [hello from the step]"},
		{"builtins.yaml", "matrix (linux, 1.26)", "show", "success 0 [OXIDE_MATRIX_GO=1.26 OXIDE_MATRIX_OS=linux linux/1.26]"},
	} {
		sg, ok := res[c.file].Stages[c.stage]
		got := sg.Status
		if c.step != "" {
			i := slices.IndexFunc(sg.Steps, func(s step) bool { return s.Name == c.step })
			if !ok || i < 0 {
				t.Errorf("%s: no step %s/%s", c.file, c.stage, c.step)
				continue
			}
			s := sg.Steps[i]
			got = s.Status
			if s.ExitCode != "-" {
				got = fmt.Sprintf("%s %s %v", s.Status, s.ExitCode, s.Stdout)
				if len(s.Stderr) > 0 {
					got += fmt.Sprintf(" %v", s.Stderr)
				}
			}
		}
		if got != c.want {
			t.Errorf("%s: oxide run: %s/%s is %q, want %q", c.file, c.stage, c.step, got, c.want)
		}
	}
	if sg := res["retry.yaml"].Stages["secret"]; len(sg.Steps) > 1 {
		if got, want := sg.Steps[1].Outputs, map[string]string{"url": "https://x/?t=***&a=b"}; !maps.Equal(got, want) {
			t.Errorf("retry.yaml: oxide run: secret/encoded outputs = %q, want %q", got, want)
		}
	}
	env := res["builtins.yaml"].Stages["env"].Steps[0].Stdout
	for _, l := range []string{"OXIDE_BRANCH=main", "OXIDE_EVENT=manual", "OXIDE_PIPELINE=parity-builtins", "OXIDE_REF=refs/heads/main",
		"OXIDE_STAGE=env", "OXIDE_WORKSPACE=<set>", "workspace is the step's directory",
		"K=from-trigger GREETING=hello STAGE_VAR=main-stage", "expr: from-trigger manual refs/heads/main " + runtime.GOOS} {
		if !slices.Contains(env, l) {
			t.Errorf("builtins.yaml: oxide run printed no line %q: %q", l, env)
		}
	}
}

// runLocal runs c under oxide run's executor in a fresh workspace.
func runLocal(t *testing.T, c pcase) result {
	t.Helper()
	p, err := pipeline.Parse(c.name, []byte(c.yaml))
	if err != nil {
		t.Fatal(err)
	}
	r, err := plan.Compile(p, c.trigger)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{lines: map[lineKey][]string{}}
	ws := t.TempDir()
	run := local.Execute(t.Context(), store.NewID(), r, local.Options{
		Workspace: ws, LookupEnv: os.LookupEnv,
		NewEnvironment: func(*plan.Node) runner.Environment { return host.New(host.Options{Grace: time.Second}) },
	}, rec)
	res := result{Status: string(run.Status), Stages: map[string]stage{}}
	for _, n := range r.Nodes {
		sr := run.Stages[n.Index]
		sg := stage{Status: string(sr.Status), Reason: sr.Reason}
		for i, s := range n.Job.Steps {
			st := step{Name: s.Name, Status: "pending", ExitCode: "-"}
			if i < len(sr.Steps) {
				x := sr.Steps[i]
				st.Status, st.Outputs = string(x.Status), normalizeOutputs(x.Outputs)
				if x.Status != runner.StatusSkipped && x.Status != runner.StatusRunning && x.Err == nil {
					st.ExitCode = fmt.Sprint(x.ExitCode)
				}
			}
			st.Stdout = normalize(rec.lines[lineKey{n.Name, s.Key(), "stdout"}])
			st.Stderr = normalize(rec.lines[lineKey{n.Name, s.Key(), "stderr"}])
			sg.Steps = append(sg.Steps, st)
		}
		res.Stages[n.Name] = sg
	}
	return res
}

type lineKey struct{ stage, step, stream string }

// recorder keeps the lines of every attempt of every stage instance.
type recorder struct {
	mu    sync.Mutex
	lines map[lineKey][]string
}

func (r *recorder) StepStarted(runner.StepInfo) {}

func (r *recorder) StepLines(s runner.StepInfo, stream runner.Stream, lines [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := lineKey{s.Job.Stage, s.Step.Key(), string(stream)}
	for _, l := range lines {
		r.lines[k] = append(r.lines[k], string(l))
	}
}

func (r *recorder) StepCompleted(runner.StepInfo, runner.StepResult) {}
func (r *recorder) RunStarted(*local.Run)                            {}
func (r *recorder) StageStarted(*local.Run, *plan.Node)              {}
func (r *recorder) StageCompleted(*local.Run, *plan.Node)            {}
func (r *recorder) RunCompleted(*local.Run)                          {}

// runRemote stores c on srv, triggers it as c's trigger says and reads
// back its run and logs.
func runRemote(t *testing.T, srv *testServer, c pcase) result {
	t.Helper()
	ctx := t.Context()
	p, err := srv.client.CreatePipeline(ctx, sdk.CreatePipelineRequest{Definition: c.yaml})
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	run, err := srv.client.TriggerRun(ctx, p.ID, sdk.TriggerRequest{Branch: c.trigger.Branch, Variables: c.trigger.Variables})
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := srv.client.WaitRun(wctx, run.ID); err != nil {
		t.Fatalf("%s: wait for run %s: %v", c.name, run.ID, err)
	}
	run, err = srv.client.GetRun(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[lineKey][]string{}
	for after := ""; ; {
		page, err := srv.client.Logs(ctx, run.ID, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range page.Lines {
			k := lineKey{l.Stage, l.Step, l.Stream}
			lines[k] = append(lines[k], l.Text)
		}
		if len(page.Lines) == 0 || page.Next == after {
			break
		}
		after = page.Next
	}
	res := result{Status: string(run.Status), Stages: map[string]stage{}}
	for _, sg := range run.Stages {
		out := stage{Status: string(sg.Status), Reason: sg.Reason}
		for _, s := range sg.Steps {
			st := step{Name: s.Name, Status: string(s.Status), ExitCode: "-", Outputs: normalizeOutputs(s.Outputs)}
			if s.ExitCode != nil {
				st.ExitCode = fmt.Sprint(*s.ExitCode)
			}
			st.Stdout = normalize(lines[lineKey{sg.Name, s.Key, "stdout"}])
			st.Stderr = normalize(lines[lineKey{sg.Name, s.Key, "stderr"}])
			out.Steps = append(out.Steps, st)
		}
		res.Stages[sg.Name] = out
	}
	return res
}

// volatile are the OXIDE_* variables whose values differ by nature between
// two runs (the pipelines check what they can of them, such as
// OXIDE_WORKSPACE being the step's directory), and epoch are the times in
// seconds that examples/hello.yaml makes its version of.
var (
	volatile = regexp.MustCompile(`^(OXIDE_(RUN_ID|JOB_ID|WORKSPACE|OUTPUT))=.+$`)
	epoch    = regexp.MustCompile(`\b1[0-9]{9}\b`)
)

func normalize(lines []string) []string {
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		out = append(out, epoch.ReplaceAllString(volatile.ReplaceAllString(l, "$1=<set>"), "<epoch>"))
	}
	return out
}

func normalizeOutputs(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = epoch.ReplaceAllString(v, "<epoch>")
	}
	return out
}

// compare describes how got differs from want, or returns "".
func compare(want, got result) string {
	var d []string
	if want.Status != got.Status {
		d = append(d, fmt.Sprintf("run: %s, want %s", got.Status, want.Status))
	}
	for _, name := range slices.Sorted(maps.Keys(want.Stages)) {
		w, g := want.Stages[name], got.Stages[name]
		if w.Status != g.Status || w.Reason != g.Reason {
			d = append(d, fmt.Sprintf("stage %q: %s (%q), want %s (%q)", name, g.Status, g.Reason, w.Status, w.Reason))
		}
		if len(w.Steps) != len(g.Steps) {
			d = append(d, fmt.Sprintf("stage %q: %d steps, want %d", name, len(g.Steps), len(w.Steps)))
			continue
		}
		for i := range w.Steps {
			ws, gs := w.Steps[i], g.Steps[i]
			if fw, fg := fmt.Sprintf("%+v", ws), fmt.Sprintf("%+v", gs); fw != fg {
				d = append(d, fmt.Sprintf("stage %q step %q:\n    got  %s\n    want %s", name, ws.Name, fg, fw))
			}
		}
	}
	for name := range got.Stages {
		if _, ok := want.Stages[name]; !ok {
			d = append(d, fmt.Sprintf("stage %q only on the server", name))
		}
	}
	return strings.Join(d, "\n")
}

type testServer struct {
	client   *sdk.Client
	grpcAddr string
}

// startServer runs a control plane in this process: with its own agent
// (workers slots; it gets the secrets' and retry counters' variables), and
// an agent endpoint on grpcAddr when set. An empty dsn is SQLite in a fresh
// data directory.
func startServer(t *testing.T, admin, dsn string, workers int, grpcAddr string) *testServer {
	t.Helper()
	var cfg server.Config
	cfg.Flags(pflag.NewFlagSet("parity", pflag.ContinueOnError))
	cfg.DataDir, cfg.HTTPAddr, cfg.GRPCAddr, cfg.DatabaseURL = t.TempDir(), "127.0.0.1:0", grpcAddr, dsn
	cfg.Agents, cfg.HostOnly = workers, true
	cfg.AgentDir, cfg.AgentEnv = testkit.SharedDir(t), []string{"API_TOKEN", "PARITY_SECRET", "TMPDIR"}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	go func() { done <- server.Run(ctx, cfg, log, func(a string) { addr <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	select {
	case a := <-addr:
		return &testServer{client: sdk.New("http://"+a, admin), grpcAddr: grpcAddr}
	case err := <-done:
		t.Fatalf("server: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server was not ready after 30s")
	}
	return nil
}

// startAgent runs a real oxide-agent process for srv, on the host.
func startAgent(t *testing.T, srv *testServer) {
	t.Helper()
	tok, err := srv.client.CreateAgentToken(t.Context(), 10*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "agent")
	stderr := &syncBuffer{}
	cmd := exec.Command(agentBin, "--server", srv.grpcAddr, "--token", tok.Token, "--data-dir", dataDir,
		"--name", "parity", "--host-only", "--concurrency", fmt.Sprint(runtime.NumCPU()))
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", stderr.String())
		}
	})
	testkit.WaitFor(t, 30*time.Second, "the agent online", func() bool {
		ident, err := agent.LoadIdentity(dataDir)
		if err != nil {
			return false
		}
		a, err := srv.client.GetAgent(t.Context(), ident.AgentID)
		return err == nil && a.Status == "online"
	})
}

// syncBuffer collects a log written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
