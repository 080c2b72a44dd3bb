package main

import (
	"os"
	"regexp"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestServerScripts runs the scripts in testdata/server: the client
// commands against a real Oxide server with at least one agent that runs
// steps on its host. It is skipped unless OXIDE_TEST_SERVER is the server's
// URL and OXIDE_TEST_TOKEN an admin token of it. The server should be
// fresh: scripts create pipelines and templates under fixed names (each
// script its own), and they run in parallel.
func TestServerScripts(t *testing.T) {
	server, token := os.Getenv("OXIDE_TEST_SERVER"), os.Getenv("OXIDE_TEST_TOKEN")
	if server == "" || token == "" {
		t.Skip("set OXIDE_TEST_SERVER and OXIDE_TEST_TOKEN to run the client against a real server")
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
