package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

func newWorkersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "List the server's elastic workers and the providers that make them",
	}
	var output string
	var lf listFlags
	var states []string
	var provider string
	ls := &cobra.Command{
		Use:   "list",
		Short: "List elastic workers, newest first",
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
			opts := sdk.ListWorkersOptions{Provider: provider}
			for _, s := range states {
				opts.States = append(opts.States, sdk.WorkerState(s))
			}
			items, err := listItems(ctx, cmd, lf, func(ctx context.Context, o sdk.ListOptions) (sdk.Page[sdk.Worker], error) {
				opts.ListOptions = o
				return c.ListWorkers(ctx, opts)
			})
			if err != nil {
				return apiError(err)
			}
			return printList(cmd.OutOrStdout(), output, items, []string{"ID", "PROVIDER", "STATE", "AGENT", "AGE", "ISOLATION", "ERROR"}, func(w sdk.Worker) []string {
				isolation, _, _ := strings.Cut(w.Isolation, ":")
				return []string{shortID(w.ID), w.Provider, string(w.State), w.AgentID, ago(w.CreatedAt), isolation, w.Error}
			})
		},
	}
	outputFlag(ls, &output)
	lf.add(ls)
	ls.Flags().StringSliceVar(&states, "state", nil, "only workers in these states, comma-separated")
	ls.Flags().StringVar(&provider, "provider", "", "only the workers of this provider")

	providers := &cobra.Command{
		Use:   "providers",
		Short: "Show the providers of elastic workers: health, capacity and workers by state",
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
			items, err := c.Providers(ctx)
			if err != nil {
				return apiError(err)
			}
			return printList(cmd.OutOrStdout(), output, items, []string{"NAME", "HEALTHY", "CPUS", "MEMORY", "RUNNING", "WORKERS", "ERROR"}, func(p sdk.Provider) []string {
				cpus, memory, running := "", "", ""
				if c := p.Capacity; c != nil {
					cpus, memory, running = fmt.Sprint(c.CPUs), fmt.Sprintf("%.1fGi", float64(c.MemoryBytes)/(1<<30)), fmt.Sprint(c.Workers)
				}
				return []string{p.Name, fmt.Sprint(p.Healthy), cpus, memory, running, workerCounts(p.Workers), cmp.Or(p.Error, p.CapacityError)}
			})
		},
	}
	outputFlag(providers, &output)
	cmd.AddCommand(ls, providers)
	return cmd
}

// shortID is the first 8 characters of an ID, as people tell them apart.
func shortID(id string) string { return id[:min(len(id), 8)] }

// workerCounts lists the states that have workers, in order: "2 ready, 1 failed".
func workerCounts(counts map[sdk.WorkerState]int) string {
	var out []string
	for _, s := range []sdk.WorkerState{sdk.WorkerProvisioning, sdk.WorkerReady, sdk.WorkerTerminating, sdk.WorkerTerminated, sdk.WorkerFailed} {
		if counts[s] > 0 {
			out = append(out, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	return strings.Join(out, ", ")
}
