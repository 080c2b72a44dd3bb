// Command oxide is Oxide's command-line interface and local runner: it
// validates, plans and runs pipelines on this machine with no server, and
// reaches the server and agent binaries as `oxide server` and `oxide agent`.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// Exit statuses.
const (
	exitFailure      = 1   // the run failed
	exitUsage        = 2   // invalid pipeline or usage
	exitInterrupted  = 130 // the user interrupted the run
	exitStdoutClosed = 141 // stdout was closed before the run's end (128+SIGPIPE)
)

// exitError carries an exit status up to main. A nil err means the
// message was already printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "oxide:", ee.err)
		}
		return ee.code
	}
	// cobra's own errors: unknown command or flag, wrong arguments.
	fmt.Fprintln(os.Stderr, "oxide:", err)
	return exitUsage
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "oxide",
		Short:         "Oxide CI: run pipelines here, or on a server and its agents",
		Version:       fullVersion(),
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.AddCommand(newRunCmd(), newValidateCmd(), newInitCmd(),
		siblingCmd("server", "Run the Oxide server (the oxide-server binary)"),
		siblingCmd("agent", "Run an Oxide agent (the oxide-agent binary)"))
	root.AddCommand(newLoginCmd(), newConfigCmd(), newPipelinesCmd(), newRunsCmd(), newLogsCmd(), newCancelCmd(),
		newJobsCmd(), newTemplatesCmd(), newAgentsCmd(), newWorkersCmd(), newSecretsCmd())
	return root
}

// fullVersion is the version with the VCS revision the binary was built from.
func fullVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	v := version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (" + s.Value[:12] + ")"
		}
	}
	return v
}
