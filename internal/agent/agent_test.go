package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/agent/agenttest"
	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// bundle is what a test of the agent needs: a test double of the server
// (agenttest: it issues certificates from a test CA, records what agents
// send, acknowledges, and pushes jobs when told) and directories.
type bundle struct {
	t    *testing.T
	srv  *agenttest.Server
	dir  string // the agent's data directory
	work string // scratch files of the test's jobs
}

func setup(t *testing.T) *bundle {
	t.Parallel()
	srv, err := agenttest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	srv.AddToken("tok", "from-token")
	return &bundle{t: t, srv: srv, dir: filepath.Join(t.TempDir(), "agent"), work: t.TempDir()}
}

// config is an agent configuration for the bundle's server, with short
// intervals.
func (b *bundle) config() Config {
	return Config{
		Server: b.srv.Addr, Token: "tok", Labels: []string{"test"}, DataDir: b.dir, Concurrency: 1,
		Heartbeat: time.Second, Grace: 5 * time.Second, KillGrace: 500 * time.Millisecond, FlushTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(b.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// running is an agent started by a test.
type running struct {
	id     string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs an agent until the test ends, and waits until it is
// connected.
func (b *bundle) start(cfg Config) *running {
	t := b.t
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	testkit.WaitFor(t, 10*time.Second, "the agent to connect", func() bool {
		select {
		case err := <-r.done:
			t.Fatalf("Run: %v", err)
		default:
		}
		id, err := LoadIdentity(cfg.DataDir)
		if err != nil {
			return false
		}
		r.id = id.AgentID
		return b.srv.Connected(r.id)
	})
	return r
}

// stop shuts the agent down as SIGTERM does, and returns what Run
// returned.
func (r *running) stop(t *testing.T) error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			r.err = fmt.Errorf("Run did not return")
			t.Error(r.err)
		}
	})
	return r.err
}

func (b *bundle) result(jobID string) *agentrpc.JobResult {
	b.t.Helper()
	var res *agentrpc.JobResult
	testkit.WaitFor(b.t, 20*time.Second, "the result of job "+jobID, func() bool { res = b.srv.Result(jobID); return res != nil })
	return res
}

func (b *bundle) accepted(jobID string) {
	b.t.Helper()
	testkit.WaitFor(b.t, 10*time.Second, "job "+jobID+" to be accepted", func() bool {
		return slices.ContainsFunc(b.srv.Received(), func(r agenttest.Received) bool {
			return r.Msg.GetAccepted().GetLease().GetJobId() == jobID
		})
	})
}

func (b *bundle) push(agentID, jobID, script string) {
	b.t.Helper()
	if err := b.srv.Push(agentID, agenttest.RunJob(agentID, jobID, "run-1", 1, job(script))); err != nil {
		b.t.Fatal(err)
	}
}

// gate returns a path, and a shell command that waits until it exists.
func (b *bundle) gate(name string) (path, wait string) {
	path = filepath.Join(b.work, name)
	return path, fmt.Sprintf("while [ ! -e %q ]; do sleep 0.02; done", path)
}

func open(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func job(script string) spec.Job {
	return spec.Job{Stage: "test", Steps: []*spec.Step{{Name: "main", ID: "main", Run: script}}}
}

// checkLines checks that the lines received, resent ones included, are
// "line 1" … "line n" with no gap: every sequence number from the first to
// the last, each always with the same text.
func checkLines(t *testing.T, lines []*agentrpc.LogLine, n int) {
	t.Helper()
	bySeq := map[int64]string{}
	for _, l := range lines {
		if prev, ok := bySeq[l.Seq]; ok && prev != l.Text {
			t.Fatalf("seq %d came as %q and as %q", l.Seq, prev, l.Text)
		}
		bySeq[l.Seq] = l.Text
	}
	if len(bySeq) != n {
		t.Fatalf("%d distinct lines, want %d", len(bySeq), n)
	}
	first := slices.Min(slices.Collect(mapsKeys(bySeq)))
	for i := range n {
		if got, want := bySeq[first+int64(i)], "line "+strconv.Itoa(i+1); got != want {
			t.Fatalf("seq %d is %q, want %q", first+int64(i), got, want)
		}
	}
}

func mapsKeys(m map[int64]string) func(func(int64) bool) {
	return func(yield func(int64) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// sessionLines returns the lines of a job received in one session.
func sessionLines(srv *agenttest.Server, jobID string, session int) []*agentrpc.LogLine {
	var out []*agentrpc.LogLine
	for _, r := range srv.Received() {
		if b := r.Msg.GetLogs(); b != nil && r.Session == session && b.Lease.GetJobId() == jobID {
			out = append(out, b.Lines...)
		}
	}
	return out
}

func TestRegister(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	var logged []string
	logf := func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }

	// A CA that is not the server's fails before the token is sent.
	other, err := agenttest.New()
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	wrongCA := filepath.Join(b.work, "wrong-ca.pem")
	os.WriteFile(wrongCA, other.CAPEM, 0o600)
	if _, err := Register(ctx, b.srv.Addr, "tok", nil, b.dir, RegisterOptions{CAFile: wrongCA}); err == nil {
		t.Fatal("registered with a CA that is not the server's")
	}

	// Trust on first use: the CA's fingerprint is reported.
	id, err := Register(ctx, b.srv.Addr, "tok", []string{"linux"}, b.dir, RegisterOptions{Logf: logf, Capacity: 2})
	if err != nil {
		t.Fatal(err)
	}
	if id.AgentID == "" || !slices.Equal(id.Labels, []string{"from-token", "linux"}) {
		t.Fatalf("identity %+v", id)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], id.CAFingerprint()) || !strings.HasPrefix(id.CAFingerprint(), "sha256:") {
		t.Fatalf("logged %q, want the CA fingerprint %s", logged, id.CAFingerprint())
	}
	for _, f := range []string{KeyFile, CertFile, CAFile, InfoFile} {
		fi, err := os.Stat(filepath.Join(b.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	loaded, err := LoadIdentity(b.dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.AgentID != id.AgentID || loaded.CAFingerprint() != id.CAFingerprint() {
		t.Fatalf("loaded %+v, registered %+v", loaded, id)
	}

	// The token is spent.
	if _, err := Register(ctx, b.srv.Addr, "tok", nil, t.TempDir(), RegisterOptions{}); err == nil {
		t.Fatal("registered twice with one token")
	}
	// With the right CA given, no trust on first use.
	caFile := filepath.Join(b.work, "ca.pem")
	os.WriteFile(caFile, b.srv.CAPEM, 0o600)
	b.srv.AddToken("tok2")
	logged = nil
	if _, err := Register(ctx, b.srv.Addr, "tok2", nil, t.TempDir(), RegisterOptions{CAFile: caFile, Logf: logf}); err != nil {
		t.Fatal(err)
	}
	if len(logged) != 0 {
		t.Fatalf("logged %q", logged)
	}
	if _, err := LoadIdentity(t.TempDir()); err != ErrNotRegistered {
		t.Fatalf("LoadIdentity of an empty directory: %v", err)
	}
}

// TestReconnectWithStoredIdentity: a second start needs no token; the
// agent is known by its stored certificate.
func TestReconnectWithStoredIdentity(t *testing.T) {
	b := setup(t)
	cfg := b.config()
	r := b.start(cfg)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the server to see the agent go", func() bool { return !b.srv.Connected(r.id) })
	cfg.Token = ""
	r2 := b.start(cfg)
	if r2.id != r.id || b.srv.Sessions(r.id) != 2 || len(b.srv.Agents()) != 1 {
		t.Fatalf("second start: agent %s (first %s), %d sessions, agents %v", r2.id, r.id, b.srv.Sessions(r.id), b.srv.Agents())
	}
	var hello *agentrpc.Hello
	for _, m := range b.srv.Received() {
		if h := m.Msg.GetHello(); h != nil && m.Session == 2 {
			hello = h
		}
	}
	if hello == nil || hello.Capacity != 1 || !slices.Equal(hello.Labels, []string{"from-token", "test"}) || len(hello.Running) != 0 {
		t.Fatalf("hello %v", hello)
	}
}

// TestRunJob: a pushed job runs on the host; the server hears accepted,
// the step starting, the logs in order with increasing seq, and the
// result, in that order, with increasing batch_seq.
func TestRunJob(t *testing.T) {
	b := setup(t)
	r := b.start(b.config())
	b.push(r.id, "j1", `for i in $(seq 1 1000); do echo "line $i"; done; echo oops >&2; echo "greeting=hi" >> "$OXIDE_OUTPUT"`)
	res := b.result("j1")
	if res.Status != "success" || len(res.Steps) != 1 || res.Steps[0].ExitCode != 0 || res.Steps[0].Outputs["greeting"] != "hi" {
		t.Fatalf("result %v", res)
	}
	if l := res.Lease; l.JobId != "j1" || l.WorkerId != r.id || l.Attempt != 1 {
		t.Fatalf("result lease %v", l)
	}
	// Sequence numbers increase with no gap; stdout and stderr are read
	// concurrently, so the stderr line may come anywhere.
	lines := b.srv.Lines("j1")
	var stdout []string
	for i, l := range lines {
		if i > 0 && l.Seq != lines[i-1].Seq+1 {
			t.Fatalf("seq %d after %d", l.Seq, lines[i-1].Seq)
		}
		if l.StepId != "main" {
			t.Fatalf("line %v", l)
		}
		if l.Stream == "stdout" {
			stdout = append(stdout, l.Text)
		} else if l.Stream != "stderr" || l.Text != "oops" {
			t.Fatalf("line %v", l)
		}
	}
	if len(lines) != 1001 || len(stdout) != 1000 || stdout[0] != "line 1" || stdout[999] != "line 1000" {
		t.Fatalf("%d lines, %d on stdout", len(lines), len(stdout))
	}

	var kinds []string
	var batchSeq uint64
	for _, m := range b.srv.Received() {
		kind := ""
		switch {
		case m.Msg.GetAccepted() != nil:
			kind = "accepted"
		case m.Msg.GetStep() != nil:
			kind = "step:" + m.Msg.GetStep().Status
		case m.Msg.GetLogs() != nil:
			kind = "logs"
		case m.Msg.GetResult() != nil:
			kind = "result"
		}
		if seq := batchSeqOf(m.Msg); seq != 0 {
			if seq <= batchSeq {
				t.Fatalf("batch_seq %d after %d", seq, batchSeq)
			}
			batchSeq = seq
		}
		if kind != "" && (len(kinds) == 0 || kinds[len(kinds)-1] != kind) {
			kinds = append(kinds, kind)
		}
	}
	if got := strings.Join(kinds, " "); got != "accepted step:running logs result" {
		t.Fatalf("messages: %s", got)
	}
}

func batchSeqOf(m *agentrpc.AgentMessage) uint64 {
	return m.GetLogs().GetBatchSeq() + m.GetStep().GetBatchSeq() + m.GetResult().GetBatchSeq()
}

// TestResendAfterDrop: the server drops the connection mid-job without
// acknowledging; the agent reconnects, says it still runs the job, resends
// what was not acknowledged, and the server ends up with every line and
// the result.
func TestResendAfterDrop(t *testing.T) {
	b := setup(t)
	r := b.start(b.config())
	b.srv.SetManualAck(true)
	gate, wait := b.gate("go")
	b.push(r.id, "j1", `for i in $(seq 1 100); do echo "line $i"; done; `+wait+`; for i in $(seq 101 200); do echo "line $i"; done`)
	testkit.WaitFor(t, 10*time.Second, "100 lines", func() bool { return len(b.srv.Lines("j1")) == 100 })

	b.srv.Drop(r.id)
	testkit.WaitFor(t, 10*time.Second, "the agent to reconnect", func() bool { return b.srv.Sessions(r.id) == 2 && b.srv.Connected(r.id) })
	testkit.WaitFor(t, 10*time.Second, "the 100 lines to come again", func() bool { return len(sessionLines(b.srv, "j1", 2)) == 100 })
	for _, m := range b.srv.Received() {
		if h := m.Msg.GetHello(); h != nil && m.Session == 2 {
			if len(h.Running) != 1 || h.Running[0].JobId != "j1" || h.Running[0].WorkerId != r.id || h.Running[0].Attempt != 1 {
				t.Fatalf("hello after reconnect lists %v", h.Running)
			}
		}
	}
	b.srv.SetManualAck(false)
	open(t, gate)
	if res := b.result("j1"); res.Status != "success" {
		t.Fatalf("result %v", res)
	}
	checkLines(t, b.srv.Lines("j1"), 200)
}

// TestJobRunsWhileDisconnected: a job goes on while the server cannot be
// reached; its logs and result wait, and arrive once the agent is back.
func TestJobRunsWhileDisconnected(t *testing.T) {
	b := setup(t)
	r := b.start(b.config())
	gate, wait := b.gate("go")
	b.push(r.id, "j1", `echo "line 1"; `+wait+`; for i in $(seq 2 50); do echo "line $i"; done`)
	testkit.WaitFor(t, 10*time.Second, "the first line", func() bool { return len(b.srv.Lines("j1")) == 1 })
	b.srv.Refuse(true)
	open(t, gate)
	ws := filepath.Join(b.dir, "workspaces", "j1")
	testkit.WaitFor(t, 10*time.Second, "the job to end (its workspace to go)", func() bool {
		_, err := os.Stat(ws)
		return os.IsNotExist(err)
	})
	if b.srv.Result("j1") != nil {
		t.Fatal("a result arrived while the server refused sessions")
	}
	b.srv.Refuse(false)
	if res := b.result("j1"); res.Status != "success" {
		t.Fatalf("result %v", res)
	}
	checkLines(t, b.srv.Lines("j1"), 50)
	for _, m := range b.srv.Received() {
		if h := m.Msg.GetHello(); h != nil && m.Session > 1 && len(h.Running) != 0 {
			t.Fatalf("hello after the job ended lists %v", h.Running)
		}
	}
}

// TestSpill: past its memory bound the unacknowledged buffer spills to the
// data directory, is replayed from there after a reconnect, and the spool
// empties once the server acknowledges.
func TestSpill(t *testing.T) {
	b := setup(t)
	cfg := b.config()
	cfg.MemoryBuffer = 4 << 10
	cfg.segment = 16 << 10
	r := b.start(cfg)
	b.srv.SetManualAck(true)
	gate, wait := b.gate("go")
	const n = 3000
	b.push(r.id, "j1", fmt.Sprintf(`for i in $(seq 1 %d); do echo "line $i"; done; %s; echo "line %d"`, n-1, wait, n))
	testkit.WaitFor(t, 20*time.Second, "the lines", func() bool { return len(b.srv.Lines("j1")) == n-1 })
	spool := filepath.Join(b.dir, "spool")
	if files, _ := os.ReadDir(spool); len(files) < 2 {
		t.Fatalf("%d spool files with %d lines unacknowledged, want several", len(files), n-1)
	}

	b.srv.Drop(r.id)
	testkit.WaitFor(t, 10*time.Second, "the agent to reconnect", func() bool { return b.srv.Sessions(r.id) == 2 && b.srv.Connected(r.id) })
	testkit.WaitFor(t, 20*time.Second, "the lines to come again", func() bool { return len(sessionLines(b.srv, "j1", 2)) == n-1 })
	again := sessionLines(b.srv, "j1", 2)
	for i, l := range again {
		if l.Text != "line "+strconv.Itoa(i+1) {
			t.Fatalf("resent line %d is %q", i, l.Text)
		}
	}
	b.srv.SetManualAck(false)
	if err := b.srv.Ack(r.id); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the spool to empty", func() bool { files, _ := os.ReadDir(spool); return len(files) == 0 })
	open(t, gate)
	if res := b.result("j1"); res.Status != "success" {
		t.Fatalf("result %v", res)
	}
	checkLines(t, b.srv.Lines("j1"), n)
}

// TestCancelJob: CancelJob stops the step's processes; a job pushed
// beyond the agent's slots is handed back at once, and never runs.
func TestCancelJob(t *testing.T) {
	b := setup(t)
	cfg := b.config()
	cfg.Heartbeat = 50 * time.Millisecond
	r := b.start(cfg)
	pidFile := filepath.Join(b.work, "pid")
	b.push(r.id, "j1", fmt.Sprintf(`sleep 300 & echo $! > %q; wait`, pidFile))
	b.push(r.id, "j2", "echo never")
	var pid int
	testkit.WaitFor(t, 10*time.Second, "the step to start", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	})
	testkit.WaitFor(t, 5*time.Second, "a heartbeat listing the job", func() bool {
		return slices.ContainsFunc(b.srv.Received(), func(m agenttest.Received) bool {
			hb := m.Msg.GetHeartbeat()
			return hb != nil && slices.Equal(hb.RunningJobs, []string{"j1"}) && hb.MemoryTotalBytes > 0 && hb.DiskFreeBytes > 0
		})
	})
	testkit.WaitFor(t, 5*time.Second, "j2 to be handed back", func() bool { return b.srv.Rejected("j2") != nil })
	if rej := b.srv.Rejected("j2"); rej.Reason != reasonFull {
		t.Fatalf("the job beyond the agent's slot: rejected %v", rej)
	}
	if err := b.srv.Cancel(r.id, "j1", "stop it"); err != nil {
		t.Fatal(err)
	}
	if res := b.result("j1"); res.Status != "cancelled" || res.Steps[0].Status != "cancelled" || !strings.Contains(res.Steps[0].Error, "stop it") {
		t.Fatalf("result %v", res)
	}
	testkit.WaitFor(t, 5*time.Second, "the step's process to go", func() bool { return !alive(pid) })
	for _, m := range b.srv.Received() {
		if m.Msg.GetAccepted().GetLease().GetJobId() == "j2" || m.Msg.GetLogs().GetLease().GetJobId() == "j2" {
			t.Fatalf("the job handed back ran: %v", m.Msg)
		}
	}
}

// alive reports whether a process exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// TestDrain: after Drain the agent takes no new job (it hands it back),
// finishes the one it runs, and says it drains in its heartbeats.
func TestDrain(t *testing.T) {
	b := setup(t)
	cfg := b.config()
	cfg.Concurrency = 2
	cfg.Heartbeat = time.Hour // the heartbeat comes from the drain
	r := b.start(cfg)
	gate, wait := b.gate("go")
	b.push(r.id, "j1", wait+"; echo done")
	b.accepted("j1")
	if err := b.srv.Drain(r.id); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "a heartbeat saying draining", func() bool {
		return slices.ContainsFunc(b.srv.Received(), func(m agenttest.Received) bool { return m.Msg.GetHeartbeat().GetDraining() })
	})
	b.push(r.id, "j2", "echo no")
	testkit.WaitFor(t, 5*time.Second, "j2 to be handed back", func() bool { return b.srv.Rejected("j2") != nil })
	if rej := b.srv.Rejected("j2"); rej.Reason != reasonDraining || rej.Lease.JobId != "j2" {
		t.Fatalf("rejected %v", rej)
	}
	open(t, gate)
	if res := b.result("j1"); res.Status != "success" {
		t.Fatalf("result %v", res)
	}
	if b.srv.Result("j2") != nil {
		t.Fatal("j2 ran")
	}
}

// TestShutdown: a job pushed beyond the agent's slots is handed back at
// once; on shutdown the agent hands back what is pushed then, lets the
// running job finish within the grace period, and returns nil.
func TestShutdown(t *testing.T) {
	b := setup(t)
	r := b.start(b.config())
	gate, wait := b.gate("go")
	b.push(r.id, "j1", wait+"; echo done")
	b.push(r.id, "j2", "echo no") // the only slot is taken
	b.accepted("j1")
	testkit.WaitFor(t, 5*time.Second, "j2 to be handed back", func() bool { return b.srv.Rejected("j2") != nil })
	if rej := b.srv.Rejected("j2"); rej.Reason != reasonFull {
		t.Fatalf("rejected %v", rej)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop(t) }()
	testkit.WaitFor(t, 5*time.Second, "a heartbeat saying draining", func() bool {
		return slices.ContainsFunc(b.srv.Received(), func(m agenttest.Received) bool { return m.Msg.GetHeartbeat().GetDraining() })
	})
	b.push(r.id, "j3", "echo no")
	testkit.WaitFor(t, 5*time.Second, "j3 to be handed back", func() bool { return b.srv.Rejected("j3") != nil })
	if rej := b.srv.Rejected("j3"); rej.Reason != reasonShutdown {
		t.Fatalf("rejected %v", rej)
	}
	open(t, gate)
	if res := b.result("j1"); res.Status != "success" {
		t.Fatalf("result %v", res)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if b.srv.Result("j2") != nil || b.srv.Result("j3") != nil {
		t.Fatal("j2 or j3 ran")
	}
	if files, _ := os.ReadDir(filepath.Join(b.dir, "spool")); len(files) != 0 {
		t.Fatalf("spool left: %v", files)
	}
}

// TestShutdownGraceExpires: a job still running when the grace period ends
// is stopped and handed back for its next attempt.
func TestShutdownGraceExpires(t *testing.T) {
	b := setup(t)
	cfg := b.config()
	cfg.Grace = 200 * time.Millisecond
	r := b.start(cfg)
	pidFile := filepath.Join(b.work, "pid")
	b.push(r.id, "j1", fmt.Sprintf(`sleep 300 & echo $! > %q; wait`, pidFile))
	var pid int
	testkit.WaitFor(t, 10*time.Second, "the step to start", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	})
	start := time.Now()
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	rej := b.srv.Rejected("j1")
	if rej == nil || !strings.Contains(rej.Reason, "shut down") {
		t.Fatalf("rejected %v, result %v", rej, b.srv.Result("j1"))
	}
	if alive(pid) {
		t.Fatal("the step's process survived the shutdown")
	}
}

// TestBadJob: a job whose payload cannot be decoded fails at once.
func TestBadJob(t *testing.T) {
	b := setup(t)
	r := b.start(b.config())
	m := agenttest.RunJob(r.id, "j1", "", 1, job("true"))
	m.Job = []byte("{")
	if err := b.srv.Push(r.id, m); err != nil {
		t.Fatal(err)
	}
	if res := b.result("j1"); res.Status != "failure" || !strings.Contains(res.Error, "decode job") {
		t.Fatalf("result %v", res)
	}
}

// TestDataDirMadePrivate (issue 11.9): the agent makes its data directory
// 0700 and the files in it 0600 before it reads them.
func TestDataDirMadePrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	info := filepath.Join(dir, InfoFile)
	if err := os.WriteFile(info, []byte("not JSON"), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, m := range map[string]os.FileMode{info: 0o644, dir: 0o777} {
		if err := os.Chmod(path, m); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	a, err := New(Config{Server: "127.0.0.1:1", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); err == nil || !strings.Contains(err.Error(), InfoFile) {
		t.Fatalf("Run with a broken identity: %v", err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, info: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != want {
			t.Errorf("%s: mode %04o, want %04o", path, m, want)
		}
	}
}
