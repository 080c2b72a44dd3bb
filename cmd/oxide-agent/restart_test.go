package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/oxide-ci/oxide/internal/agent"
	"github.com/oxide-ci/oxide/internal/server"
	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// napPipeline has one stage whose step prints a line, sleeps, and prints
// another: the server restarts while it sleeps.
const napPipeline = `version: "1"
name: restart
stages:
  - name: nap
    steps:
      - name: sleep
        run: echo before; sleep 3; echo after
`

// TestServerRestart: the real server (server.Run in this process, SQLite,
// fixed loopback ports) and two real oxide-agent processes. The server
// stops while a step sleeps on an agent and starts again on the same data
// directory and ports. The agents reconnect, the agent that runs the step
// keeps its lease and reports the rest through the new server: the run
// succeeds with its only job at attempt 1, and the stored log has both
// lines, once each, in order.
func TestServerRestart(t *testing.T) {
	admin := api.NewToken()
	t.Setenv("OXIDE_ADMIN_TOKEN", admin) // not parallel: Run reads it
	var cfg server.Config
	cfg.Flags(pflag.NewFlagSet("test", pflag.ContinueOnError))
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr, cfg.GRPCAddr = testkit.FreeAddr(t), testkit.FreeAddr(t) // the same for both servers
	cfg.Agents = 0
	cfg.AgentTimeout = 10 * time.Second
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	c := &restClient{base: "http://" + cfg.HTTPAddr, token: admin}

	srv := runServer(t, cfg, logs)
	agents := make([]*agentProc, 2)
	for i := range agents {
		var tok struct{ Token string }
		c.do(t, "POST", "/api/v1/agents/tokens", map[string]any{"ttl": "10m"}, 201, &tok)
		agents[i] = startRealAgent(t, c, cfg.GRPCAddr, tok.Token, fmt.Sprintf("r%d", i+1))
	}

	var p struct{ ID string }
	c.do(t, "POST", "/api/v1/pipelines", map[string]string{"definition": napPipeline}, 201, &p)
	var run struct{ ID string }
	c.do(t, "POST", "/api/v1/pipelines/"+p.ID+"/runs", map[string]any{}, 201, &run)
	testkit.WaitFor(t, 30*time.Second, `the line "before"`, func() bool {
		return len(runLines(t, c, run.ID)) > 0
	})
	before := jobOf(t, c, run.ID)
	if before.State != store.JobRunning || before.Attempt != 1 {
		t.Fatalf("before the restart: job %s, attempt %d; want running, 1", before.State, before.Attempt)
	}

	began := time.Now()
	if err := srv.stop(30 * time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	stopped := time.Since(began)
	runServer(t, cfg, logs) // the same data directory and ports; stopped by the cleanup
	t.Logf("server stopped in %s and answered again %s after the stop began",
		stopped.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))

	testkit.Until(t, 30*time.Second, func() (bool, string) {
		for _, a := range agents {
			var got struct{ Status store.AgentStatus }
			c.do(t, "GET", "/api/v1/agents/"+a.id, nil, 200, &got)
			if got.Status != store.AgentOnline {
				return false, fmt.Sprintf("agent %s is %s", a.id, got.Status)
			}
		}
		return true, ""
	})
	t.Logf("both agents online again %s after the stop began", time.Since(began).Round(time.Millisecond))
	testkit.Until(t, 30*time.Second, func() (bool, string) {
		var got struct{ Status store.RunStatus }
		c.do(t, "GET", "/api/v1/runs/"+run.ID, nil, 200, &got)
		return got.Status == store.RunSuccess, "run status " + string(got.Status)
	})
	t.Logf("run succeeded %s after the stop began", time.Since(began).Round(time.Millisecond))

	// The stage ran once: one job, attempt 1, on the agent that had it.
	var jobs struct{ Items []jobView }
	c.do(t, "GET", "/api/v1/jobs?run_id="+run.ID, nil, 200, &jobs)
	if len(jobs.Items) != 1 {
		t.Fatalf("%d jobs for the run, want 1", len(jobs.Items))
	}
	if j := jobs.Items[0]; j.State != store.JobSucceeded || j.Attempt != 1 || j.WorkerID != before.WorkerID {
		t.Fatalf("job %s, attempt %d on %s; want succeeded, attempt 1 on %s (not requeued)", j.State, j.Attempt, j.WorkerID, before.WorkerID)
	}
	received := 0
	for _, a := range agents {
		received += strings.Count(a.stderr.String(), `msg="job received"`)
	}
	if received != 1 {
		t.Fatalf("the agents received the job %d times, want once", received)
	}
	// Its log is whole, in order, without duplicates.
	lines := runLines(t, c, run.ID)
	want := []string{"before", "after"}
	if len(lines) != len(want) {
		t.Fatalf("stored log %v, want %q", lines, want)
	}
	for i, l := range lines {
		if l.Text != want[i] || l.Seq != 1<<32+int64(i+1) {
			t.Fatalf("line %d: seq %#x %q, want seq %#x %q", i, l.Seq, l.Text, 1<<32+int64(i+1), want[i])
		}
	}
}

// runningServer is server.Run in this process.
type runningServer struct {
	cancel context.CancelFunc
	done   chan error
	err    error
	ended  bool
}

// runServer starts server.Run on cfg and returns once it answers; the test's
// cleanup stops it.
func runServer(t *testing.T, cfg server.Config, logs io.Writer) *runningServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &runningServer{cancel: cancel, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ready := make(chan struct{})
	go func() { s.done <- server.Run(ctx, cfg, log, func(string) { close(ready) }) }()
	t.Cleanup(func() {
		if err := s.stop(30 * time.Second); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-s.done:
		s.ended, s.err = true, err
		t.Fatalf("Run returned before the server was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server was not ready after 30s")
	}
	return s
}

// stop cancels Run's context and returns Run's error; later calls return
// the same.
func (s *runningServer) stop(limit time.Duration) error {
	if s.ended {
		return s.err
	}
	s.ended = true
	s.cancel()
	select {
	case s.err = <-s.done:
	case <-time.After(limit):
		s.err = fmt.Errorf("Run did not return within %s", limit)
	}
	return s.err
}

// startRealAgent starts oxide-agent against grpcAddr with a bootstrap
// token and waits until the server's API lists it online.
func startRealAgent(t *testing.T, c *restClient, grpcAddr, token, name string) *agentProc {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), name)
	p := &agentProc{stderr: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, "--server", grpcAddr, "--token", token, "--data-dir", dataDir, "--name", name,
		"--host-only", "--heartbeat", "1s", "--log-level", "debug")
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
		var a struct{ Status store.AgentStatus }
		return c.try("GET", "/api/v1/agents/"+p.id, nil, &a) == 200 && a.Status == store.AgentOnline
	})
	return p
}

type jobView struct {
	ID       string         `json:"id"`
	State    store.JobState `json:"state"`
	Attempt  int            `json:"attempt"`
	WorkerID string         `json:"worker_id"`
}

// jobOf returns the job of a one-stage run.
func jobOf(t *testing.T, c *restClient, runID string) jobView {
	t.Helper()
	var run struct {
		Stages []struct {
			JobID string `json:"job_id"`
		}
	}
	c.do(t, "GET", "/api/v1/runs/"+runID, nil, 200, &run)
	if len(run.Stages) != 1 || run.Stages[0].JobID == "" {
		t.Fatalf("run %s: stages %+v, want one with a job", runID, run.Stages)
	}
	var j jobView
	c.do(t, "GET", "/api/v1/jobs/"+run.Stages[0].JobID, nil, 200, &j)
	return j
}

type logLine struct {
	Seq  int64  `json:"seq"`
	Text string `json:"text"`
}

// runLines returns the stored log of a run, every page.
func runLines(t *testing.T, c *restClient, runID string) []logLine {
	t.Helper()
	var all []logLine
	after := ""
	for {
		var page struct {
			Lines []logLine
			Next  string
		}
		c.do(t, "GET", "/api/v1/runs/"+runID+"/logs?after="+after, nil, 200, &page)
		all = append(all, page.Lines...)
		if len(page.Lines) == 0 || page.Next == "" {
			return all
		}
		after = page.Next
	}
}

// restClient calls the server's REST API with a token.
type restClient struct {
	base, token string
}

// try calls the API and decodes a 2xx answer into v; it returns the status,
// 0 when the call failed.
func (c *restClient) try(method, path string, body, v any) int {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0
	}
	if resp.StatusCode/100 == 2 && v != nil && json.Unmarshal(b, v) != nil {
		return 0
	}
	return resp.StatusCode
}

// do calls the API and fails the test unless the answer has status want.
func (c *restClient) do(t *testing.T, method, path string, body any, want int, v any) {
	t.Helper()
	if got := c.try(method, path, body, v); got != want {
		t.Fatalf("%s %s: status %d, want %d", method, path, got, want)
	}
}
