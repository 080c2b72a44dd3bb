package server

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/testkit"
)

// theft is issue 11's reproduction, run by a developer's job on the default
// server: the data directory's secrets by relative and absolute paths, and
// the environments of the job's parent (the agent) and of the server.
func theft(dataDir string) string {
	return strings.Join([]string{
		"id -un",
		"cat ../../admin-token " + filepath.Join(dataDir, "admin-token"),
		"base64 -w0 ../../secret.key",
		"base64 -w0 " + filepath.Join(dataDir, "secret.key"),
		"head -2 ../../ca-key.pem " + filepath.Join(dataDir, "ca-key.pem"),
		"tr '\\0' '\\n' </proc/$PPID/environ",
		"tr '\\0' '\\n' </proc/" + strconv.Itoa(os.Getpid()) + "/environ",
		"echo done",
	}, " || true; ")
}

// runJob submits command as a developer and returns its log once it ended.
func runJob(t *testing.T, s *testServer, command string) (state string, log string) {
	t.Helper()
	var tok struct{ Token string }
	s.call(t, "POST", "/api/v1/tokens", s.Token, map[string]string{"name": "dev", "role": "developer"}).want(t, 201, &tok)
	var j struct{ ID, State string }
	s.call(t, "POST", "/api/v1/jobs", tok.Token, map[string]any{"name": "steal", "command": command}).want(t, 201, &j)
	testkit.Until(t, 30*time.Second, func() (bool, string) {
		s.call(t, "GET", "/api/v1/jobs/"+j.ID, tok.Token, nil).want(t, 200, &j)
		return j.State == "succeeded" || j.State == "failed", "job " + j.State
	})
	var logs struct{ Lines []struct{ Text string } }
	s.call(t, "GET", "/api/v1/jobs/"+j.ID+"/logs", tok.Token, nil).want(t, 200, &logs)
	var b strings.Builder
	for _, l := range logs.Lines {
		b.WriteString(l.Text + "\n")
	}
	return j.State, b.String()
}

// ownWorker returns the /api/v1/workers row of the server's own agent.
func ownWorker(t *testing.T, s *testServer) map[string]any {
	t.Helper()
	var ws struct{ Items []map[string]any }
	s.call(t, "GET", "/api/v1/workers", s.Token, nil).want(t, 200, &ws)
	for _, w := range ws.Items {
		if p, _ := w["provider"].(string); strings.HasPrefix(p, ownProviderPrefix) {
			return w
		}
	}
	t.Fatalf("no worker of the server's own agent in %v", ws.Items)
	return nil
}

// TestOwnAgentIsolated: as root, the default server runs a developer's
// job as an unprivileged user of its own, in a directory outside the data
// directory, with an environment that holds none of the server's: the job
// reads none of the server's secrets, and /api/v1/workers says what
// isolates it.
func TestOwnAgentIsolated(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("isolation by user needs root; TestOwnAgentNotIsolated covers this case")
	}
	cfg := testConfig(t)
	s := startServer(t, cfg)
	_, log := runJob(t, s, theft(cfg.DataDir))
	if !strings.HasPrefix(log, "oxide-runner\n") || !strings.Contains(log, "done") {
		t.Fatalf("the job's log does not open with its user oxide-runner and end with done:\n%s", log)
	}
	secretKey, err := os.ReadFile(filepath.Join(cfg.DataDir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	for what, leak := range map[string]string{
		"the admin token": s.Token, "the variable OXIDE_ADMIN_TOKEN": "OXIDE_ADMIN_TOKEN", "the CA key": "PRIVATE KEY",
		"the secret key": string(secretKey[:12]), "the secret key's base64": base64.StdEncoding.EncodeToString(secretKey)[:16],
	} {
		if strings.Contains(log, leak) {
			t.Errorf("the job read %s:\n%s", what, log)
		}
	}
	if !strings.Contains(log, "Permission denied") {
		t.Errorf("the job's reads were not refused:\n%s", log)
	}
	var w map[string]any
	testkit.WaitFor(t, 10*time.Second, "the own agent's worker to be ready", func() bool {
		w = ownWorker(t, s)
		return w["state"] == "ready"
	})
	if iso, _ := w["isolation"].(string); !strings.HasPrefix(iso, "user oxide-runner") || w["agent_id"] == "" {
		t.Errorf("own agent's worker: %v; want ready, with its agent, isolated by user oxide-runner", w)
	}
}

// TestOwnAgentNotIsolated: a server that cannot give its agent a user of
// its own (not root; here, --agent-user "") says so loudly in its log and
// in /api/v1/workers; its agent's environment still holds none of the
// server's variables.
func TestOwnAgentNotIsolated(t *testing.T) {
	cfg := testConfig(t)
	cfg.AgentUser = ""
	s := startServer(t, cfg)
	_, log := runJob(t, s, "tr '\\0' '\\n' </proc/$PPID/environ; echo done")
	if !strings.Contains(log, "done") || strings.Contains(log, "OXIDE_ADMIN_TOKEN") || !strings.Contains(log, "PATH=") {
		t.Errorf("the agent's environment, as its job reads it:\n%s", log)
	}
	if !strings.Contains(s.logs.String(), "JOBS ARE NOT ISOLATED FROM THIS SERVER") {
		t.Errorf("no warning in the server's log")
	}
	w := ownWorker(t, s)
	if iso, _ := w["isolation"].(string); !strings.HasPrefix(iso, "none: ") || w["isolated"] != false {
		t.Errorf("own agent's worker: %v; want isolation none: …, isolated false", w)
	}
}
