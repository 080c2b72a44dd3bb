package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

func newAgentsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List, show, drain and deregister the server's agents; make their bootstrap tokens",
	}
	var output string
	var lf listFlags
	ls := &cobra.Command{
		Use:   "list",
		Short: "List agents",
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
			items, err := listItems(ctx, cmd, lf, c.ListAgents)
			if err != nil {
				return apiError(err)
			}
			return printList(cmd.OutOrStdout(), output, items, []string{"NAME", "ID", "STATUS", "LABELS", "CAPACITY", "VERSION", "PLATFORM", "HEARTBEAT"}, func(a sdk.Agent) []string {
				return []string{a.Name, a.ID, string(a.Status), strings.Join(a.Labels, ","), fmt.Sprint(a.Capacity), a.Version, platform(a), agoPtr(a.LastHeartbeatAt)}
			})
		},
	}
	outputFlag(ls, &output)
	lf.add(ls)

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show an agent",
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
			a, err := c.GetAgent(ctx, args[0])
			if err != nil {
				return apiError(err)
			}
			return printAgent(cmd.OutOrStdout(), output, a)
		},
	}
	outputFlag(get, &output)

	drain := &cobra.Command{
		Use:   "drain ID",
		Short: "Stop an agent from taking new jobs; it finishes those it has",
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
			a, err := c.DrainAgent(ctx, args[0])
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), a)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agent %s (%s): %s\n", a.Name, a.ID, a.Status)
			return nil
		},
	}
	outputFlag(drain, &output)

	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Deregister an agent (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			if err := c.DeleteAgent(ctx, args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deregistered agent %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(ls, get, drain, del, newAgentTokenCmd())
	return cmd
}

func newAgentTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Make bootstrap tokens, with which agents register",
	}
	var (
		output string
		ttl    time.Duration
		labels []string
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a one-time bootstrap token for an agent (admin)",
		Long: `Make a one-time bootstrap token: an agent registers with it once, before it
expires, and gets the labels given here besides its own. The token is shown
only now. When stdout is not a terminal, it is all that is printed:

  oxide-agent --server HOST:9090 --token "$(oxide agents token create --ttl 10m --labels linux)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if ttl <= 0 {
				return usageError("--ttl must be positive")
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			c, err := newClient("")
			if err != nil {
				return err
			}
			t, err := c.CreateAgentToken(ctx, ttl, labels)
			if err != nil {
				return apiError(err)
			}
			out := cmd.OutOrStdout()
			switch {
			case output == "json":
				return writeJSON(out, t)
			case !isTerminal(out):
				_, err := fmt.Fprintln(out, t.Token)
				return err
			}
			fmt.Fprintln(out, t.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "bootstrap token %s: one agent may register with it until %s (labels: %s); it is not shown again\n",
				t.ID, t.ExpiresAt.UTC().Format(time.RFC3339), orNone(strings.Join(t.Labels, ",")))
			return nil
		},
	}
	outputFlag(create, &output)
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token may be used (1m to 720h)")
	create.Flags().StringSliceVar(&labels, "labels", nil, "labels the agent gets, comma-separated")
	cmd.AddCommand(create)
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func platform(a sdk.Agent) string {
	if a.OS == "" && a.Arch == "" {
		return ""
	}
	return a.OS + "/" + a.Arch
}

func printAgent(w io.Writer, output string, a sdk.Agent) error {
	if output == "json" {
		return writeJSON(w, a)
	}
	return printFields(w, "name", a.Name, "id", a.ID, "status", string(a.Status), "labels", strings.Join(a.Labels, ","),
		"capacity", fmt.Sprint(a.Capacity), "version", a.Version, "platform", platform(a),
		"registered", stamp(&a.RegisteredAt), "last heartbeat", stamp(a.LastHeartbeatAt))
}
