package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

func newJobsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "jobs",
		Aliases: []string{"job"},
		Short:   "Submit, list, show and cancel jobs on the server",
	}
	var output string
	var spec sdk.JobSpec
	var env []string
	submit := &cobra.Command{
		Use:   "submit [flags] -- COMMAND [ARGS...]",
		Short: "Submit a job that runs a shell command",
		Long: `Submit a job that runs COMMAND in a shell on an agent. A single argument is
the shell command as written ('make test && make dist'); several are quoted
into one, so that each stays one word.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			vars, err := parseAssignments("--env", env)
			if err != nil {
				return err
			}
			if len(vars) > 0 {
				spec.Env = vars
			}
			spec.Command = shellCommand(args)
			if spec.Name == "" { // the program's name
				first := args[0]
				if len(args) == 1 {
					first = strings.Fields(args[0] + " job")[0]
				}
				spec.Name = filepath.Base(first)
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			j, err := c.SubmitJob(ctx, spec)
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), j)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "submitted job %s (%s): %s\n", j.ID, j.Name, j.State)
			return nil
		},
	}
	fl := submit.Flags()
	fl.StringVar(&spec.Name, "name", "", "the job's name (default the command's)")
	fl.StringArrayVarP(&spec.Labels, "label", "l", nil, "a `LABEL` the agent must have (repeatable)")
	fl.IntVarP(&spec.Priority, "priority", "p", 0, "higher runs first")
	fl.StringArrayVarP(&env, "env", "e", nil, "set an environment variable, `K=V` (repeatable)")
	fl.StringArrayVar(&spec.Secrets, "secret", nil, "expose the stored secret `NAME` as a variable (repeatable)")
	fl.StringVar(&spec.Image, "image", "", "run in this container `IMAGE`")
	fl.StringVar(&spec.Shell, "shell", "", "the shell (default bash)")
	fl.StringVar(&spec.Timeout, "timeout", "", "fail the job after this long (e.g. 10m)")
	fl.IntVar(&spec.MaxAttempts, "max-attempts", 0, "attempts before the job fails (default the server's)")
	outputFlag(submit, &output)

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a job",
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
			j, err := c.GetJob(ctx, args[0])
			if err != nil {
				return apiError(err)
			}
			return printJob(cmd.OutOrStdout(), output, j)
		},
	}
	outputFlag(get, &output)

	var state, runID string
	var lf listFlags
	ls := &cobra.Command{
		Use:   "list",
		Short: "List jobs",
		Args:  cobra.NoArgs,
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
			jobs, err := listItems(ctx, cmd, lf, func(ctx context.Context, o sdk.ListOptions) (sdk.Page[sdk.Job], error) {
				return c.ListJobs(ctx, sdk.ListJobsOptions{ListOptions: o, State: sdk.JobState(state), RunID: runID})
			})
			if err != nil {
				return apiError(err)
			}
			return printList(cmd.OutOrStdout(), output, jobs, []string{"ID", "NAME", "STATE", "ATTEMPT", "PRIORITY", "WORKER", "CREATED"}, func(j sdk.Job) []string {
				return []string{j.ID, j.Name, string(j.State), fmt.Sprintf("%d/%d", j.Attempt, j.MaxAttempts), fmt.Sprint(j.Priority), j.WorkerID, ago(j.CreatedAt)}
			})
		},
	}
	outputFlag(ls, &output)
	lf.add(ls)
	ls.Flags().StringVar(&state, "state", "", "only jobs in this state")
	ls.Flags().StringVar(&runID, "run", "", "only the jobs of this run `ID`")

	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job",
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
			j, err := c.CancelJob(ctx, args[0])
			if errors.Is(err, sdk.ErrConflict) {
				return &exitError{code: exitFailure, err: fmt.Errorf("job %s is done already: %w", args[0], err)}
			}
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), j)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cancelling job %s (%s): %s\n", j.ID, j.Name, j.State)
			return nil
		},
	}
	outputFlag(cancel, &output)

	logs := &cobra.Command{
		Use:   "logs ID",
		Short: "Print a job's output so far",
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
			return apiError(printLogs(ctx, args[0], c.JobLogs, logPrinter(cmd.OutOrStdout(), output)))
		},
	}
	outputFlag(logs, &output)

	cmd.AddCommand(submit, get, ls, cancel, logs)
	return cmd
}

func printJob(w io.Writer, output string, j sdk.Job) error {
	if output == "json" {
		return writeJSON(w, j)
	}
	exit := ""
	if j.ExitCode != nil {
		exit = fmt.Sprint(*j.ExitCode)
	}
	what := j.Spec.Command
	if what == "" && len(j.Spec.Steps) > 0 {
		what = fmt.Sprintf("%d steps", len(j.Spec.Steps))
	}
	kv := []string{"id", j.ID, "name", j.Name, "state", string(j.State)}
	if j.WaitingReason != "" {
		kv = append(kv, "waiting", j.WaitingReason)
	}
	return printFields(w, append(kv, "attempt", fmt.Sprintf("%d of %d", j.Attempt, j.MaxAttempts), "priority", fmt.Sprint(j.Priority),
		"labels", strings.Join(j.Labels, ","), "worker", j.WorkerID, "command", what, "exit code", exit, "error", j.Error,
		"created", stamp(&j.CreatedAt), "started", stamp(j.StartedAt), "finished", stamp(j.FinishedAt))...)
}

// shellCommand makes one shell command of args: a single argument is taken
// as written, several are quoted where they need it.
func shellCommand(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// shellQuote quotes s for a POSIX shell unless it is plainly safe.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
