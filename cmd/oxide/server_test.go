package main

import (
	"context"
	"log/slog"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	oxserver "github.com/oxide-ci/oxide/internal/server"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// TestServerScripts runs the scripts in testdata/server: the client
// commands against a real Oxide server with agents that run steps on their
// host. The test starts that server in its own process (SQLite, NATS
// JetStream and two workers, in a temporary data directory on a free
// loopback port), unless OXIDE_TEST_SERVER names one already running, with
// OXIDE_TEST_TOKEN an admin token of it. The scripts create pipelines and
// templates under fixed names (each script its own) and run in parallel.
func TestServerScripts(t *testing.T) {
	server, token := os.Getenv("OXIDE_TEST_SERVER"), os.Getenv("OXIDE_TEST_TOKEN")
	if server == "" {
		server, token = startServer(t)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/server",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("NO_COLOR", "1")
			env.Setenv("HOME", env.WorkDir+"/home")
			env.Setenv("XDG_CONFIG_HOME", env.WorkDir+"/xdg")
			env.Setenv(envServer, server)
			env.Setenv(envToken, token)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"grab": grab,
		},
	})
}

// grab runs `grab VAR REGEXP`: it sets VAR to the first group of REGEXP's
// match in the last command's stdout, so that a script can use an ID that
// the server made.
func grab(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: grab VAR REGEXP")
	}
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	m := re.FindStringSubmatch(ts.ReadFile("stdout"))
	if len(m) < 2 {
		ts.Fatalf("grab: no match for %q (with a group) in stdout", args[1])
	}
	ts.Setenv(args[0], m[1])
}

// startServer runs a control plane in this process and returns its URL and
// admin token; it stops with the test.
func startServer(t *testing.T) (url, token string) {
	t.Helper()
	token = "oxt_test-admin-token-0123456789"
	t.Setenv("OXIDE_ADMIN_TOKEN", token)
	cfg := oxserver.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Agents: 2, AgentDir: testkit.SharedDir(t), HostOnly: true,
		Lease: 10 * time.Second, AgentTimeout: 30 * time.Second,
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- oxserver.Run(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addr <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	select {
	case a := <-addr:
		return "http://" + a, token
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start in 30s")
	}
	return "", ""
}
