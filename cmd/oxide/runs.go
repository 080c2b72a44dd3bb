package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

// serverFlagDefault is --server's value when it is given without a URL:
// the configured server.
const serverFlagDefault = "configured"

// remoteRun reports whether `oxide run` runs on a server: with --server, or
// when a server is configured, but never with --local. It takes a URL given
// as `--server URL` (with a space) out of args.
func remoteRun(cmd *cobra.Command, f *runFlags, args *[]string) (bool, error) {
	serverFlag := cmd.Flags().Changed("server")
	if serverFlag && f.server == serverFlagDefault {
		f.server = ""
		if a := *args; len(a) > 0 && (strings.HasPrefix(a[0], "http://") || strings.HasPrefix(a[0], "https://")) {
			f.server, *args = a[0], a[1:]
		}
	}
	if len(*args) > 1 {
		return false, usageError("run takes one pipeline file, got %d arguments", len(*args))
	}
	if f.local {
		if serverFlag || f.pipeline != "" {
			return false, usageError("--local runs here: it does not go with --server or --pipeline")
		}
		return false, nil
	}
	if serverFlag {
		return true, nil
	}
	s, err := resolveSettings()
	if err != nil {
		return false, &exitError{code: exitFailure, err: fmt.Errorf("%w (--local runs here without it)", err)}
	}
	if s.Server == "" && f.pipeline != "" {
		return false, usageError("--pipeline needs a server: give --server URL or run `oxide login`")
	}
	return s.Server != "", nil
}

// localOnlyRunFlags are the flags of `oxide run` that only a local run
// understands.
var localOnlyRunFlags = []string{"parallel", "secret", "secrets-file", "timeout", "environment", "workspace", "grace"}

// runRemote stores the pipeline FILE on the server under its name (unless
// --pipeline names a stored one), triggers a run, and with --wait or --watch
// waits for it and exits by its status.
func runRemote(cmd *cobra.Command, args []string, f *runFlags) error {
	if f.output != "text" && f.output != "json" {
		return usageError("--output must be text or json, not %q", f.output)
	}
	for _, name := range localOnlyRunFlags {
		if cmd.Flags().Changed(name) {
			hint := ""
			if strings.HasPrefix(name, "secret") {
				hint = "; a server's secrets are stored with `oxide secrets set`"
			}
			return usageError("--%s is for local runs (--local)%s", name, hint)
		}
	}
	if f.pipeline != "" && len(args) > 0 {
		return usageError("give a pipeline FILE or --pipeline NAME, not both")
	}
	vars, err := parseAssignments("--var", f.vars)
	if err != nil {
		return err
	}
	c, err := newClient(f.server)
	if err != nil {
		return err
	}
	var def, name string
	if f.pipeline == "" {
		file := defaultPipeline
		if len(args) == 1 {
			file = args[0]
		}
		d, p, err := readPipeline(file)
		if err != nil {
			return err
		}
		if p.Name == "" {
			return usageError("%s has no name: the server stores pipelines by name", file)
		}
		def, name = d, p.Name
	}
	ctx, stop := signalContext(cmd)
	defer stop()

	pipelineID := f.pipeline
	if def != "" {
		p, err := upsertPipeline(ctx, c, name, def)
		if err != nil {
			return apiError(err)
		}
		pipelineID = p.ID
	}
	wd, _ := os.Getwd()
	git := detectGit(wd)
	overrideGit(&git, f)
	req := sdk.TriggerRequest{Branch: git.Branch, SHA: git.SHA, Ref: git.Ref, Variables: vars}
	if cmd.Flags().Changed("event") {
		req.Event = f.event
	}
	run, err := c.TriggerRun(ctx, pipelineID, req)
	if err != nil {
		return apiError(err)
	}
	if def == "" { // a stored pipeline: its warnings come from the server
		for _, w := range run.Warnings {
			fmt.Fprintln(cmd.ErrOrStderr(), w)
		}
	}
	out := cmd.OutOrStdout()
	if !f.wait && !f.watch {
		if f.output == "json" { // one line, as every JSON of oxide run
			return json.NewEncoder(out).Encode(run)
		}
		fmt.Fprintf(out, "%s #%d: run %s %s\n", run.PipelineName, run.Number, run.ID, run.Status)
		return nil
	}
	if f.output == "text" {
		fmt.Fprintf(out, "%s #%d: run %s %s\n", run.PipelineName, run.Number, run.ID, run.Status)
	}
	if f.watch {
		run, err = c.FollowLogs(ctx, run.ID, logPrinter(out, f.output))
	} else {
		run, err = c.WaitRun(ctx, run.ID)
	}
	if err != nil {
		return stoppedWaiting(cmd, err, run.ID)
	}
	return runResult(out, f.output, run)
}

// stoppedWaiting explains that an interrupted wait leaves the run going.
func stoppedWaiting(cmd *cobra.Command, err error, runID string) error {
	if errors.Is(err, context.Canceled) && cmd.Context().Err() == nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "oxide: stopped waiting; run %s goes on (`oxide cancel %s` stops it)\n", runID, runID)
		return &exitError{code: exitInterrupted}
	}
	return apiError(err)
}

// runResult prints a finished run (its summary, or its JSON) and turns its
// status into the exit status: 0 for success, else 1.
func runResult(w io.Writer, output string, run sdk.Run) error {
	if output == "json" {
		if err := json.NewEncoder(w).Encode(run); err != nil {
			return err
		}
	} else {
		printSummary(w, run)
	}
	if run.Status != sdk.RunSuccess {
		return &exitError{code: exitFailure}
	}
	return nil
}

// printSummary prints a run's stages and steps with their statuses.
// printApprovals prints the approval gates of the run's stage named stage
// (every instance of a matrix stage): the approvals still needed, or how the
// gate ended.
func printApprovals(w io.Writer, run sdk.Run, stage string) {
	for _, s := range run.Stages {
		a := s.Approval
		if a == nil || s.Name != stage && !strings.HasPrefix(s.Name, stage+" (") {
			continue
		}
		if a.Status == "pending" {
			fmt.Fprintf(w, "%s: %d of %d approvals, %d more needed\n", s.Name, a.CurrentApprovals, a.RequiredApprovers, a.PendingApprovals)
		} else {
			fmt.Fprintf(w, "%s: %s\n", s.Name, a.Status)
		}
	}
}

func printSummary(w io.Writer, run sdk.Run) {
	width := 0
	for _, s := range run.Stages {
		width = max(width, len(s.Name))
		for _, st := range s.Steps {
			width = max(width, len(st.Name)+4)
		}
	}
	if len(run.Stages) > 0 {
		fmt.Fprintln(w, "\nSummary")
	}
	for _, s := range run.Stages {
		detail := string(s.Status)
		if d := elapsed(s.StartedAt, s.FinishedAt); d != "" {
			detail += " in " + d
		}
		if s.Reason != "" {
			detail = string(s.Status) + ": " + s.Reason
		}
		fmt.Fprintf(w, "  %s %-*s  %s\n", mark(string(s.Status)), width, s.Name, detail)
		for _, st := range s.Steps {
			detail := string(st.Status)
			if st.ExitCode != nil && *st.ExitCode != 0 {
				detail += fmt.Sprintf(" (exit %d)", *st.ExitCode)
			}
			fmt.Fprintf(w, "      %s %-*s  %s\n", mark(string(st.Status)), width-4, st.Name, detail)
		}
	}
	took := ""
	if d := elapsed(run.StartedAt, run.FinishedAt); d != "" {
		took = " in " + d
	}
	fmt.Fprintf(w, "\nRun %s%s: %s #%d (run %s)\n", run.Status, took, run.PipelineName, run.Number, run.ID)
}

// logPrinter prints log lines as a local run does, "[stage/step] text", or
// as JSON, one line each. Before the lines of a job's attempt 2 and later,
// it prints a header, "── attempt 2 of 3 (agent lost) ──", made of the
// system line that opens the attempt (which it does not print itself).
func logPrinter(w io.Writer, output string) func(sdk.LogLine) {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return func(l sdk.LogLine) { enc.Encode(l) }
	}
	attempts := map[string]int{} // by stage: the attempt of its last line
	return func(l sdk.LogLine) {
		if prev, ok := attempts[l.Stage]; l.Attempt > 1 && (!ok || l.Attempt != prev) {
			attempts[l.Stage] = l.Attempt
			header, opens := attemptHeader(l)
			if l.Stage != "" {
				header = "[" + l.Stage + "] " + header
			}
			fmt.Fprintln(w, header)
			if opens {
				return
			}
		}
		attempts[l.Stage] = l.Attempt
		where := l.Stage
		if l.Step != "" {
			where += "/" + l.Step
		}
		if where == "" {
			fmt.Fprintln(w, l.Text)
			return
		}
		fmt.Fprintf(w, "[%s] %s\n", where, l.Text)
	}
}

// attemptHeader returns the header of attempt l.Attempt, whose first line
// l is. The server opens every attempt after the first with a system line
// "attempt 2 of 3 after agent lost" (docs/api.md): from that line, opens
// is true and the header "── attempt 2 of 3 (agent lost) ──"; from
// another, "── attempt 2 ──".
func attemptHeader(l sdk.LogLine) (header string, opens bool) {
	var n, of int
	if _, err := fmt.Sscanf(l.Text, "attempt %d of %d", &n, &of); l.Stream != "system" || err != nil || n != l.Attempt {
		return fmt.Sprintf("── attempt %d ──", l.Attempt), false
	}
	header = fmt.Sprintf("attempt %d of %d", n, of)
	if _, reason, ok := strings.Cut(l.Text, " after "); ok {
		header += " (" + reason + ")"
	}
	return "── " + header + " ──", true
}

func newLogsCmd() *cobra.Command {
	var follow bool
	var output string
	cmd := &cobra.Command{
		Use:   "logs RUN",
		Short: "Print a run's output; -f follows it until the run is done",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			print := logPrinter(cmd.OutOrStdout(), output)
			if follow {
				if _, err := c.FollowLogs(ctx, args[0], print); err != nil {
					if errors.Is(err, context.Canceled) {
						return &exitError{code: exitInterrupted}
					}
					return apiError(err)
				}
				return nil
			}
			return apiError(printLogs(ctx, args[0], c.Logs, print))
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the output until the run is done")
	outputFlag(cmd, &output)
	return cmd
}

// printLogs prints every line written so far.
func printLogs(ctx context.Context, id string, logs func(ctx context.Context, id, after string, limit int) (sdk.LogPage, error), print func(sdk.LogLine)) error {
	after := ""
	for {
		p, err := logs(ctx, id, after, 500)
		if err != nil {
			return err
		}
		for _, l := range p.Lines {
			print(l)
		}
		if len(p.Lines) == 0 || p.Next == "" || p.Next == after {
			return nil
		}
		after = p.Next
	}
}

func newCancelCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			run, err := c.CancelRun(ctx, args[0])
			if errors.Is(err, sdk.ErrConflict) {
				return &exitError{code: exitFailure, err: fmt.Errorf("run %s is done already: %w", args[0], err)}
			}
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), run)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cancelling %s #%d (run %s): %s\n", run.PipelineName, run.Number, run.ID, run.Status)
			return nil
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func newRunsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List and show a server's runs; approve or reject their stages",
	}
	var output, status string
	var lf listFlags
	ls := &cobra.Command{
		Use:   "list PIPELINE",
		Short: "List a pipeline's runs, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			runs, err := listItems(ctx, cmd, lf, func(ctx context.Context, o sdk.ListOptions) (sdk.Page[sdk.Run], error) {
				return c.ListRuns(ctx, args[0], sdk.ListRunsOptions{ListOptions: o, Status: sdk.RunStatus(status)})
			})
			if err != nil {
				return apiError(err)
			}
			return printList(cmd.OutOrStdout(), output, runs, []string{"#", "ID", "STATUS", "BRANCH", "EVENT", "CREATED", "DURATION"}, func(r sdk.Run) []string {
				return []string{fmt.Sprint(r.Number), r.ID, string(r.Status), r.Branch, r.Event, ago(r.CreatedAt), elapsed(r.StartedAt, r.FinishedAt)}
			})
		},
	}
	outputFlag(ls, &output)
	lf.add(ls)
	ls.Flags().StringVar(&status, "status", "", "only runs with this status")

	get := &cobra.Command{
		Use:   "get RUN",
		Short: "Show a run with its stages and steps",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			run, err := c.GetRun(ctx, args[0])
			if err != nil {
				return apiError(err)
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(w, run)
			}
			printFields(w, "pipeline", run.PipelineName, "run", fmt.Sprintf("#%d", run.Number), "id", run.ID,
				"status", string(run.Status), "branch", run.Branch, "sha", run.SHA, "event", run.Event,
				"created", stamp(&run.CreatedAt), "started", stamp(run.StartedAt), "finished", stamp(run.FinishedAt))
			printSummary(w, run)
			return nil
		},
	}
	outputFlag(get, &output)

	var comment string
	approval := func(verb string, call func(ctx context.Context, c *sdk.Client, run, stage, comment string) (sdk.Run, error)) *cobra.Command {
		a := &cobra.Command{
			Use:   verb + " RUN STAGE",
			Short: strings.ToUpper(verb[:1]) + verb[1:] + " a stage that waits for an approval",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := newClient("")
				if err != nil {
					return err
				}
				ctx, stop := signalContext(cmd)
				defer stop()
				run, err := call(ctx, c, args[0], args[1], comment)
				if err != nil {
					return apiError(err)
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "%s #%d (run %s): %s\n", run.PipelineName, run.Number, run.ID, run.Status)
				printApprovals(w, run, args[1])
				return nil
			},
		}
		a.Flags().StringVarP(&comment, "comment", "m", "", "a comment for the audit log")
		return a
	}
	cmd.AddCommand(ls, get,
		approval("approve", func(ctx context.Context, c *sdk.Client, run, stage, comment string) (sdk.Run, error) {
			return c.Approve(ctx, run, stage, comment)
		}),
		approval("reject", func(ctx context.Context, c *sdk.Client, run, stage, comment string) (sdk.Run, error) {
			return c.Reject(ctx, run, stage, comment)
		}))
	return cmd
}
