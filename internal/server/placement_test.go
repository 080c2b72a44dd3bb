package server

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/agent/agentcmd"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// TestPlacementEndToEnd: a server without an agent of its own, and real
// agent processes that report different machines (--cpus, --memory,
// --gpus). Each job runs on the agent that has what it asks for; a job
// that no agent could ever take waits in the queue, saying why, and runs
// once an agent that fits registers.
func TestPlacementEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.Agents = 0
	cfg.GRPCAddr = testkit.FreeAddr(t)
	s := startServer(t, cfg)

	startAgent(t, s, "small", "--cpus", "2", "--memory", "4Gi", "--gpus", "0")
	startAgent(t, s, "big", "--cpus", "8", "--memory", "16Gi", "--gpus", "0")
	type agentResp struct {
		ID          string `json:"id"`
		Name        string `json:"name"`
		Status      string `json:"status"`
		CPUMillis   int64  `json:"cpu_millis"`
		MemoryBytes int64  `json:"memory_bytes"`
		GPUs        int    `json:"gpus"`
	}
	agents := map[string]agentResp{}
	connected := func(a agentResp) bool { return a.Status == "online" && a.CPUMillis > 0 } // said Hello
	testkit.WaitFor(t, 30*time.Second, "both agents connected", func() bool {
		var list struct{ Items []agentResp }
		s.call(t, "GET", "/api/v1/agents", s.Token, nil).want(t, 200, &list)
		for _, a := range list.Items {
			if connected(a) {
				agents[a.Name] = a
			}
		}
		return len(agents) == 2
	})
	if a := agents["big"]; a.CPUMillis != 8000 || a.MemoryBytes != 16<<30 || a.GPUs != 0 {
		t.Errorf("big agent as listed: %+v", a)
	}

	type jobResp struct {
		ID            string `json:"id"`
		State         string `json:"state"`
		WorkerID      string `json:"worker_id"`
		WaitingReason string `json:"waiting_reason"`
	}
	submit := func(name string, resources map[string]any) string {
		var j jobResp
		s.call(t, "POST", "/api/v1/jobs", s.Token, map[string]any{"name": name, "command": "echo " + name, "resources": resources}).want(t, 201, &j)
		return j.ID
	}
	get := func(id string) (j jobResp) {
		s.call(t, "GET", "/api/v1/jobs/"+id, s.Token, nil).want(t, 200, &j)
		return j
	}
	ranOn := func(id, agent string) {
		t.Helper()
		var j jobResp
		testkit.WaitFor(t, 30*time.Second, "job "+id+" to succeed", func() bool { j = get(id); return j.State == "succeeded" || j.State == "failed" })
		if j.State != "succeeded" || j.WorkerID != agents[agent].ID {
			t.Errorf("job %s: %s on %s, want succeeded on %s (%s)", id, j.State, j.WorkerID, agent, agents[agent].ID)
		}
	}
	wide := submit("wide", map[string]any{"cpu": "4", "memory": "8Gi"})
	little := submit("little", map[string]any{"cpu": "500m", "memory": "1Gi"}) // best fit: the small agent
	gpu := submit("gpu", map[string]any{"gpu": 1})
	arm := submit("arm", map[string]any{"arch": "s390x"})
	ranOn(wide, "big")
	ranOn(little, "small")

	for id, why := range map[string]string{gpu: "needs 1 GPUs; the largest agent has 0", arm: "needs arch s390x; no agent with its labels and OS has it"} {
		if j := get(id); j.State != "queued" || j.WaitingReason != why {
			t.Errorf("job %s: %+v, want queued, waiting because %q", id, j, why)
		}
	}

	startAgent(t, s, "gpu", "--cpus", "1", "--memory", "1Gi", "--gpus", "1")
	testkit.WaitFor(t, 30*time.Second, "the GPU agent connected", func() bool {
		var list struct{ Items []agentResp }
		s.call(t, "GET", "/api/v1/agents", s.Token, nil).want(t, 200, &list)
		for _, a := range list.Items {
			if a.Name == "gpu" && connected(a) {
				agents["gpu"] = a
				return true
			}
		}
		return false
	})
	ranOn(gpu, "gpu")
	if j := get(arm); j.State != "queued" || j.WaitingReason == "" {
		t.Errorf("the s390x job: %+v", j)
	}
}

// startAgent starts a real agent (this test binary as oxide-agent) with a
// bootstrap token of s and the flags given, and stops it when the test
// ends.
func startAgent(t *testing.T, s *testServer, name string, flags ...string) {
	t.Helper()
	var tok struct{ Token string }
	s.call(t, "POST", "/api/v1/agents/tokens", s.Token, map[string]any{"ttl": "10m"}).want(t, 201, &tok)
	args := append([]string{agentcmd.ChildArg, "--server", s.Config.GRPCAddr, "--token", tok.Token, "--name", name,
		"--data-dir", t.TempDir(), "--host-only", "--concurrency", "2"}, flags...)
	cmd := exec.Command(os.Args[0], args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("agent %s:\n%s", name, out.String())
		}
	})
}

func TestPlacementFlag(t *testing.T) {
	cfg := testConfig(t)
	cfg.Placement = "random"
	err := Run(t.Context(), cfg, quietLogger(), func(string) { t.Error("ready with --placement random") })
	if err == nil || !strings.Contains(err.Error(), "--placement") {
		t.Errorf("Run with --placement random: %v", err)
	}
}
