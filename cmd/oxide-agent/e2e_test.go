package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/agent"
	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/server/agentsvc"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// controlPlane is the server's side for end-to-end tests: the real agent
// service (internal/server/agentsvc) on a TLS listener, over the real
// scheduler and a SQLite store, with a CA of its own.
type controlPlane struct {
	st   store.Store
	svc  *scheduler.Service
	srv  *agentsvc.Server
	addr string
}

func startControlPlane(t *testing.T, agentTimeout time.Duration) *controlPlane {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := scheduler.New(scheduler.Config{Store: st, Lease: 30 * time.Second, AgentTimeout: agentTimeout})
	ca, err := pki.NewCA("e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServerCert([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := agentsvc.New(agentsvc.Config{
		Store: st, Control: svc, CA: ca, Certificate: cert, Poll: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	sctx, stopSweeps := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() { defer close(swept); svc.Run(sctx, 100*time.Millisecond) }()
	t.Cleanup(func() {
		stopSweeps()
		<-swept
		stop, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		srv.Stop(stop)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &controlPlane{st: st, svc: svc, srv: srv, addr: ln.Addr().String()}
}

func (c *controlPlane) token(t *testing.T, labels ...string) string {
	t.Helper()
	tok, _, err := c.srv.CreateToken(context.Background(), time.Hour, labels, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (c *controlPlane) job(t *testing.T, id string) store.Job {
	t.Helper()
	j, err := c.st.Jobs().Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// agentProc is an oxide-agent process started by a test.
type agentProc struct {
	cmd    *exec.Cmd
	id     string
	stderr *syncBuffer
	exited chan error
}

// startAgent starts oxide-agent (as `oxide agent` would) and waits until
// the control plane sees it online.
func (c *controlPlane) startAgent(t *testing.T, name string, args ...string) *agentProc {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), name)
	p := &agentProc{stderr: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"--server", c.addr, "--token", c.token(t), "--data-dir", dataDir,
		"--name", name, "--heartbeat", "200ms", "--log-level", "debug"}, args...)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, p.stderr.String())
		}
	})
	testkit.WaitFor(t, 20*time.Second, name+" online", func() bool {
		select {
		case err := <-p.exited:
			t.Fatalf("%s exited: %v\n%s", name, err, p.stderr.String())
		default:
		}
		ident, err := agent.LoadIdentity(dataDir)
		if err != nil {
			return false
		}
		p.id = ident.AgentID
		a, err := c.st.Agents().Get(context.Background(), p.id)
		return err == nil && a.Status == store.AgentOnline
	})
	return p
}

// TestEndToEnd: real oxide-agent processes against the real agent service.
// A job runs on an agent and its log is stored whole; an agent killed with
// SIGKILL mid-job is found lost after --agent-timeout, and the job runs
// again, to its end, on the other agent, whose attempt's log has no gap
// and no duplicate.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cp := startControlPlane(t, 2*time.Second)
	a1 := cp.startAgent(t, "a1", "--labels", "e2e")

	// A job runs on the only agent.
	j, err := cp.svc.SubmitJob(ctx, jobspec.Spec{Name: "hello", Command: `for i in $(seq 1 300); do echo "line $i"; done`, Labels: []string{"e2e"}}, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, "the first job to succeed", func() bool { return cp.job(t, j.ID).State == store.JobSucceeded })
	if got := cp.job(t, j.ID); got.WorkerID != a1.id || got.Attempt != 1 {
		t.Fatalf("job ran on %s, attempt %d; want %s, 1", got.WorkerID, got.Attempt, a1.id)
	}
	checkStoredLog(t, cp, j.ID, 1, 300)

	// A second agent; the job starts on one of the two, which is killed.
	a2 := cp.startAgent(t, "a2", "--labels", "e2e")
	const n = 400
	j, err = cp.svc.SubmitJob(ctx, jobspec.Spec{
		Name: "long", Command: fmt.Sprintf(`for i in $(seq 1 %d); do echo "line $i"; sleep 0.01; done`, n), Labels: []string{"e2e"},
	}, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, "the second job to run and log", func() bool {
		lines, _ := cp.st.Logs().Read(ctx, j.ID, 0, 0)
		return cp.job(t, j.ID).State == store.JobRunning && len(lines) >= 50
	})
	first := cp.job(t, j.ID)
	victim, other := a1, a2
	if first.WorkerID == a2.id {
		victim, other = a2, a1
	}
	killed := time.Now()
	victim.cmd.Process.Kill() // SIGKILL: no goodbye
	testkit.WaitFor(t, 60*time.Second, "the job to succeed on the other agent", func() bool { return cp.job(t, j.ID).State == store.JobSucceeded })
	final := cp.job(t, j.ID)
	if final.WorkerID != other.id || final.Attempt != first.Attempt+1 {
		t.Fatalf("job ended on %s, attempt %d; want %s, attempt %d", final.WorkerID, final.Attempt, other.id, first.Attempt+1)
	}
	t.Logf("killed the agent of attempt %d; attempt %d succeeded on the other %s later", first.Attempt, final.Attempt, time.Since(killed).Round(time.Millisecond))
	a, err := cp.st.Agents().Get(ctx, victim.id)
	if err != nil || a.Status != store.AgentLost {
		t.Fatalf("killed agent: %+v, %v; want lost", a, err)
	}
	checkStoredLog(t, cp, j.ID, final.Attempt, n)

	// The survivor shuts down gracefully: exit 0.
	other.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-other.exited:
		if err != nil {
			t.Fatalf("after SIGINT: %v\n%s", err, other.stderr.String())
		}
		other.exited <- nil // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGINT")
	}
}

// checkStoredLog checks the stored log of one attempt of a job: lines
// "line 1" … "line n" with consecutive sequence numbers, each once, after
// the system line that opens an attempt after the first.
func checkStoredLog(t *testing.T, cp *controlPlane, jobID string, attempt, n int) {
	t.Helper()
	all, err := cp.st.Logs().Read(context.Background(), jobID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var lines []store.LogLine
	for _, l := range all {
		if l.Attempt == attempt {
			lines = append(lines, l)
		}
	}
	if attempt > 1 {
		// The server's line opens the attempt: the agent before was lost.
		if want := fmt.Sprintf("attempt %d of 3 after agent lost", attempt); len(lines) == 0 || lines[0].Text != want || lines[0].Stream != "system" {
			t.Fatalf("attempt %d opens with %+v, want the system line %q", attempt, lines[:min(1, len(lines))], want)
		}
		lines = lines[1:]
	}
	if len(lines) != n {
		t.Fatalf("attempt %d: %d lines stored, want %d", attempt, len(lines), n)
	}
	for i, l := range lines {
		if want := int64(attempt)<<32 + int64(i+1); l.Seq != want || l.Text != "line "+strconv.Itoa(i+1) {
			t.Fatalf("attempt %d, line %d: seq %#x %q, want seq %#x %q", attempt, i, l.Seq, l.Text, want, "line "+strconv.Itoa(i+1))
		}
	}
}
