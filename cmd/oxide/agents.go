package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

func newAgentsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List, show, drain and deregister the server's agents",
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
	cmd.AddCommand(ls, get, drain, del)
	return cmd
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
