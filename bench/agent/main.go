// Command agent measures oxide-agent, built from ./cmd/oxide-agent and run
// as a process against a server in this process:
//
//	go run ./bench/agent [-lines 1000000]
//
// Idle memory: the agent registers with the test double of the server
// (internal/agent/agenttest: real TLS, real gRPC, client certificates),
// connects, idles for 3 s with heartbeats every second; then VmRSS and
// VmHWM from /proc/PID/status. Baseline: a Go program that only sleeps,
// built and measured the same way. Target: ≤ 20 MiB.
//
// Log throughput, agent side: a job whose one step prints -lines lines
// (seq), timed from the push to the job's result at the server, which comes
// after its last log batch; the test double acknowledges each batch as it
// arrives and stores nothing. Baseline: bash running the same command into
// a pipe that a reader drains (`… | cat >/dev/null`).
//
// Log throughput, end to end: the same job submitted to the real agent
// service (internal/server/agentsvc, over the scheduler and a SQLite store
// in a temporary directory, in this process), timed from SubmitJob until
// the job has succeeded, when every line is readable from the store (the
// service stores an agent's messages in order, the result after the last
// log batch); the count is then checked. Baseline: the agent-side figure
// above. Target: ≥ 500,000 lines/s.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oxide-ci/oxide/internal/agent"
	"github.com/oxide-ci/oxide/internal/agent/agenttest"
	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/server/agentsvc"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

func main() {
	lines := flag.Int("lines", 1_000_000, "lines the throughput job prints")
	flag.Parse()
	dir, err := os.MkdirTemp("", "oxide-bench-agent-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "oxide-agent")
	if err := goBuild(bin, "github.com/oxide-ci/oxide/cmd/oxide-agent", ""); err != nil {
		fail(err)
	}
	if err := idleMemory(dir, bin); err != nil {
		fail(err)
	}
	fmt.Println()
	if err := throughput(dir, bin, *lines); err != nil {
		fail(err)
	}
	fmt.Println()
	if err := endToEnd(dir, bin, *lines); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/agent:", err)
	os.Exit(1)
}

// goBuild builds pkg, or the program src when pkg is empty.
func goBuild(out, pkg, src string) error {
	args := []string{"build", "-o", out, pkg}
	cmd := exec.Command("go", args...)
	if src != "" {
		d := filepath.Dir(out)
		if err := os.WriteFile(filepath.Join(d, "main.go"), []byte(src), 0o644); err != nil {
			return err
		}
		cmd = exec.Command("go", "build", "-o", out, filepath.Join(d, "main.go"))
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// agentProcess is an oxide-agent started against srv.
type agentProcess struct {
	cmd    *exec.Cmd
	id     string
	stderr bytes.Buffer
	exited chan error
}

func startAgent(bin string, srv *agenttest.Server, dataDir, token string) (*agentProcess, error) {
	return startAgentAt(bin, srv.Addr, dataDir, token, srv.Connected)
}

// startAgentAt starts oxide-agent against addr and waits until connected
// says its agent is.
func startAgentAt(bin, addr, dataDir, token string, connected func(agentID string) bool) (*agentProcess, error) {
	p := &agentProcess{exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, "--server", addr, "--token", token, "--data-dir", dataDir, "--heartbeat", "1s", "--log-level", "warn")
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.exited <- p.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if id, err := agent.LoadIdentity(dataDir); err == nil && connected(id.AgentID) {
			p.id = id.AgentID
			return p, nil
		}
		select {
		case err := <-p.exited:
			return nil, fmt.Errorf("oxide-agent exited (%v):\n%s", err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			p.cmd.Process.Kill()
			return nil, errors.New("oxide-agent did not connect within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for exit 0.
func (p *agentProcess) stop() (time.Duration, error) {
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			return 0, fmt.Errorf("oxide-agent after SIGTERM: %v, want exit 0:\n%s", err, p.stderr.String())
		}
		return time.Since(start), nil
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		return 0, errors.New("oxide-agent still runs 30s after SIGTERM")
	}
}

const sleeper = `package main

import "time"

func main() { time.Sleep(time.Hour) }
`

func idleMemory(dir, bin string) error {
	srv, err := agenttest.New()
	if err != nil {
		return err
	}
	defer srv.Close()
	srv.AddToken("idle")
	p, err := startAgent(bin, srv, filepath.Join(dir, "idle"), "idle")
	if err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	rss, hwm, err := procMem(p.cmd.Process.Pid)
	if err != nil {
		p.cmd.Process.Kill()
		return err
	}
	took, err := p.stop()
	if err != nil {
		return err
	}

	base := filepath.Join(dir, "sleeper", "sleeper")
	os.MkdirAll(filepath.Dir(base), 0o755)
	if err := goBuild(base, "", sleeper); err != nil {
		return err
	}
	s := exec.Command(base)
	if err := s.Start(); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	baseRSS, _, err := procMem(s.Process.Pid)
	s.Process.Kill()
	s.Wait()
	if err != nil {
		return err
	}
	fmt.Printf("oxide-agent idle (registered, connected over mTLS, heartbeats every 1s), after 3s:\n")
	fmt.Printf("  VmRSS %.1f MiB, VmHWM %.1f MiB (target ≤ 20 MiB)\n", mib(rss), mib(hwm))
	fmt.Printf("  baseline, a Go program that sleeps: VmRSS %.1f MiB; ratio %.1fx\n", mib(baseRSS), float64(rss)/float64(baseRSS))
	fmt.Printf("  SIGTERM: exit 0 after %s\n", took.Round(time.Millisecond))
	return nil
}

func throughput(dir, bin string, n int) error {
	script := fmt.Sprintf("seq -f 'line %%.0f' 1 %d", n)
	start := time.Now()
	if out, err := exec.Command("bash", "-c", script+" | cat >/dev/null").CombinedOutput(); err != nil {
		return fmt.Errorf("baseline: %v: %s", err, out)
	}
	baseline := time.Since(start)

	srv, err := agenttest.New()
	if err != nil {
		return err
	}
	defer srv.Close()
	srv.AddToken("logs")
	p, err := startAgent(bin, srv, filepath.Join(dir, "logs"), "logs")
	if err != nil {
		return err
	}
	defer p.cmd.Process.Kill()
	job := spec.Job{Stage: "logs", Steps: []*spec.Step{{Name: "print", ID: "print", Run: script}}}
	start = time.Now()
	if err := srv.Push(p.id, agenttest.RunJob(p.id, "j1", "", 1, job)); err != nil {
		return err
	}
	for srv.Result("j1") == nil {
		if time.Since(start) > 5*time.Minute {
			return errors.New("no result within 5 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if res := srv.Result("j1"); res.Status != "success" {
		return fmt.Errorf("job: %v", res)
	}
	lines := srv.Lines("j1")
	if len(lines) != n {
		return fmt.Errorf("the server received %d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if i > 0 && l.Seq != lines[i-1].Seq+1 {
			return fmt.Errorf("line %d: seq %d after %d", i, l.Seq, lines[i-1].Seq)
		}
	}
	_, hwm, _ := procMem(p.cmd.Process.Pid)
	if _, err := p.stop(); err != nil {
		return err
	}
	fmt.Printf("log throughput, agent to server (test double, acks each batch, stores nothing): %d lines\n", n)
	fmt.Printf("  oxide-agent: %s from push to result, %.0f lines/s (target ≥ 500,000), agent VmHWM %.1f MiB\n",
		took.Round(time.Millisecond), float64(n)/took.Seconds(), mib(hwm))
	fmt.Printf("  baseline, bash -c '%s | cat >/dev/null': %s, %.0f lines/s; ratio %.1fx\n",
		script, baseline.Round(time.Millisecond), float64(n)/baseline.Seconds(), took.Seconds()/baseline.Seconds())
	return nil
}

func mib(kb int) float64 { return float64(kb) / 1024 }

// procMem returns VmRSS and VmHWM of a process, in kB.
func procMem(pid int) (rss, hwm int, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return procKB(status, "VmRSS"), procKB(status, "VmHWM"), nil
}

// procKB returns the value in kB of a /proc/PID/status field, 0 if absent.
func procKB(status []byte, field string) int {
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb
		}
	}
	return 0
}

func endToEnd(dir, bin string, n int) error {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "oxide.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	svc := scheduler.New(scheduler.Config{Store: st, Lease: 30 * time.Second})
	ca, err := pki.NewCA("bench CA")
	if err != nil {
		return err
	}
	cert, err := ca.IssueServerCert([]string{"127.0.0.1"})
	if err != nil {
		return err
	}
	srv, err := agentsvc.New(agentsvc.Config{Store: st, Control: svc, CA: ca, Certificate: cert})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	defer func() {
		stop, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		srv.Stop(stop)
	}()
	token, _, err := srv.CreateToken(ctx, time.Hour, []string{"bench"}, "bench")
	if err != nil {
		return err
	}
	online := func(id string) bool {
		a, err := st.Agents().Get(ctx, id)
		return err == nil && a.Status == store.AgentOnline
	}
	p, err := startAgentAt(bin, ln.Addr().String(), filepath.Join(dir, "e2e"), token, online)
	if err != nil {
		return err
	}
	defer p.cmd.Process.Kill()

	script := fmt.Sprintf("seq -f 'line %%.0f' 1 %d", n)
	start := time.Now()
	j, err := svc.SubmitJob(ctx, jobspec.Spec{Name: "logs", Command: script, Labels: []string{"bench"}}, "bench")
	if err != nil {
		return err
	}
	for {
		got, err := st.Jobs().Get(ctx, j.ID)
		if err != nil {
			return err
		}
		if got.State.Done() {
			if got.State != store.JobSucceeded {
				return fmt.Errorf("job %s: %s", got.State, got.Error)
			}
			break
		}
		if time.Since(start) > 10*time.Minute {
			return errors.New("the job did not end within 10 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	lines, err := st.Logs().Read(ctx, j.ID, 0, 0)
	if err != nil {
		return err
	}
	if len(lines) != n {
		return fmt.Errorf("%d lines stored, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l.Text != "line "+strconv.Itoa(i+1) {
			return fmt.Errorf("line %d stored as %q", i+1, l.Text)
		}
	}
	_, hwm, _ := procMem(p.cmd.Process.Pid)
	if _, err := p.stop(); err != nil {
		return err
	}
	fmt.Printf("log throughput, end to end (agentsvc + scheduler + SQLite): %d lines\n", n)
	fmt.Printf("  %s from SubmitJob to all lines stored, %.0f lines/s (target ≥ 500,000), agent VmHWM %.1f MiB\n",
		took.Round(time.Millisecond), float64(n)/took.Seconds(), mib(hwm))
	return nil
}
