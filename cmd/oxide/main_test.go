package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"

	"github.com/moby/moby/client"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/oxide-ci/oxide/internal/agent/agentcmd"
	"github.com/oxide-ci/oxide/internal/testkit/dockertest"
)

// TestMain makes this test binary serve as the commands of the scripts:
// oxide itself, and expect-exit, which checks a command's exit status.
func TestMain(m *testing.M) {
	agentcmd.RunIfChild("test") // the own agent of the servers the tests start
	testscript.Main(m, map[string]func(){
		"oxide":       main,
		"expect-exit": expectExit,
	})
}

// TestScripts runs the end-to-end scripts in testdata/script: real oxide
// processes running real shells on this machine.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("NO_COLOR", "1")
			return nil
		},
	})
}

// TestContainerScripts runs the scripts in testdata/container, whose
// pipelines run in containers on this machine's real Docker engine, from
// the image oxide-test/busybox:cli (dockertest's busybox image, tagged so
// that the scripts can name it). It skips when no engine answers.
func TestContainerScripts(t *testing.T) {
	cli := dockertest.Client(t)
	image := dockertest.BusyboxImage(t, cli)
	if _, err := cli.ImageTag(t.Context(), client.ImageTagOptions{Source: image, Target: "oxide-test/busybox:cli"}); err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/container",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("NO_COLOR", "1")
			return nil
		},
	})
}

// expectExit runs `expect-exit CODE CMD ARGS...`: it runs CMD with this
// process's stdio, forwards SIGINT and SIGTERM to it, and exits 0 exactly
// when CMD exited with CODE.
func expectExit() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: expect-exit CODE CMD [ARGS...]")
		os.Exit(2)
	}
	want, err := strconv.Atoi(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "expect-exit:", err)
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "expect-exit:", err)
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	got := 0
	var ee *exec.ExitError
	if err := cmd.Wait(); errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "expect-exit:", err)
		os.Exit(2)
	}
	if got != want {
		fmt.Fprintf(os.Stderr, "expect-exit: %s exited with %d, want %d\n", os.Args[2], got, want)
		os.Exit(1)
	}
}
