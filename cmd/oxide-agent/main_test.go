package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/oxide-ci/oxide/internal/agent"
	"github.com/oxide-ci/oxide/internal/agent/agenttest"
	"github.com/oxide-ci/oxide/internal/environment/docker"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/testkit"
	"github.com/oxide-ci/oxide/internal/testkit/dockertest"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "oxide-agent-test-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "oxide-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAgentProcess: the binary, configured through the environment,
// registers, runs a pushed job, and exits 0 on SIGTERM.
func TestAgentProcess(t *testing.T) {
	t.Parallel()
	srv, err := agenttest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.AddToken("tok")
	dataDir := t.TempDir()
	cmd := exec.Command(bin, "--labels", "linux,fast")
	cmd.Env = append(os.Environ(), "OXIDE_AGENT_SERVER="+srv.Addr, "OXIDE_AGENT_TOKEN=tok", "OXIDE_AGENT_DATA_DIR="+dataDir,
		"OXIDE_AGENT_CONCURRENCY=2", "OXIDE_AGENT_HEARTBEAT=1s")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var id string
	testkit.WaitFor(t, 10*time.Second, "the agent to connect", func() bool {
		ident, err := agent.LoadIdentity(dataDir)
		if err == nil {
			id = ident.AgentID
		}
		return err == nil && srv.Connected(id)
	})
	job := spec.Job{Stage: "s", Steps: []*spec.Step{{Name: "hi", ID: "hi", Run: "echo hello from the agent"}}}
	if err := srv.Push(id, agenttest.RunJob(id, "j1", "", 1, job)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the job's result", func() bool { return srv.Result("j1") != nil })
	if res := srv.Result("j1"); res.Status != "success" {
		t.Fatalf("result %v", res)
	}
	if lines := srv.Lines("j1"); len(lines) != 1 || lines[0].Text != "hello from the agent" {
		t.Fatalf("lines %v", lines)
	}
	for _, r := range srv.Received() {
		if h := r.Msg.GetHello(); h != nil && (h.Capacity != 2 || len(h.Labels) != 2) {
			t.Fatalf("hello %v", h)
		}
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit after SIGTERM\n%s", stderr.String())
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(bin, "--no-such-flag").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, output %s", err, out)
	}
	out, err = exec.Command(bin, "--data-dir", t.TempDir()).CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !bytes.Contains(out, []byte("no server address")) {
		t.Fatalf("without --server: exit %v, output %s", err, out)
	}
	// Not registered and no token: it says so and exits 1.
	cmd := exec.Command(bin, "--server", "127.0.0.1:1", "--data-dir", t.TempDir())
	out, err = cmd.CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !bytes.Contains(out, []byte("bootstrap token")) {
		t.Fatalf("without a token: exit %v, output %s", err, out)
	}
}

// TestKilledAgentLeavesNoContainer: an agent killed with SIGKILL while a
// container job runs leaves its container behind; the next start of the
// agent (same data directory) removes it. On the real Docker engine, with
// the test server double of internal/agent/agenttest.
func TestKilledAgentLeavesNoContainer(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	image := dockertest.BusyboxImage(t, cli)
	srv, err := agenttest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.AddToken("tok")
	dataDir := t.TempDir()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--docker", "on")
		cmd.Env = append(os.Environ(), "OXIDE_AGENT_SERVER="+srv.Addr, "OXIDE_AGENT_TOKEN=tok", "OXIDE_AGENT_DATA_DIR="+dataDir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	cmd := start()
	var id string
	testkit.WaitFor(t, 10*time.Second, "the agent to connect", func() bool {
		ident, err := agent.LoadIdentity(dataDir)
		if err == nil {
			id = ident.AgentID
		}
		return err == nil && srv.Connected(id)
	})
	owned := client.Filters{}.Add("label", docker.LabelOwner+"=agent:"+id)
	containers := func() int {
		cs, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: owned})
		if err != nil {
			t.Fatal(err)
		}
		return len(cs.Items)
	}
	t.Cleanup(func() { // should the test fail half-way
		cs, _ := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: owned})
		for _, c := range cs.Items {
			cli.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true})
		}
	})
	job := spec.Job{Stage: "s", Steps: []*spec.Step{{Name: "wait", ID: "wait", Run: "echo started; sleep 600"}},
		Environment: &spec.Environment{Type: spec.EnvContainer, Container: &spec.Container{Image: image}}}
	if err := srv.Push(id, agenttest.RunJob(id, "j1", "", 1, job)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the step to start in its container", func() bool { return len(srv.Lines("j1")) > 0 })
	if n := containers(); n != 1 {
		t.Fatalf("%d containers of the agent while its job runs, want 1", n)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if n := containers(); n != 1 {
		t.Fatalf("%d containers after SIGKILL, want the job's still there", n)
	}
	// The container's main process reads the stdin the agent held: with
	// the agent dead it ends, and the step with it, so no step runs on
	// beside the job's next attempt.
	testkit.WaitFor(t, 30*time.Second, "the dead agent's container to stop", func() bool {
		cs, err := cli.ContainerList(t.Context(), client.ContainerListOptions{Filters: owned}) // running ones
		return err == nil && len(cs.Items) == 0
	})
	start()
	testkit.WaitFor(t, 30*time.Second, "the restarted agent to remove the container", func() bool { return containers() == 0 })
}

// TestLinksNoControlPlane: the agent shares only the wire types
// (internal/spec) with the server; it links no store, scheduler, planner
// or pipeline parser.
func TestLinksNoControlPlane(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"internal/store", "internal/scheduler", "internal/plan", "internal/pipeline", "internal/events"} {
		for dep := range strings.Lines(string(out)) {
			if strings.Contains(dep, "/oxide/"+pkg) {
				t.Errorf("oxide-agent links %s", strings.TrimSpace(dep))
			}
		}
	}
}
