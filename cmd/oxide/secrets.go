package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

// scopeFlags choose a secret's scope: the organization by default, or a
// pipeline by name or ID.
type scopeFlags struct {
	scope, scopeID, pipeline string
}

func (f *scopeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.scope, "scope", "", "organization (default) or pipeline")
	cmd.Flags().StringVar(&f.scopeID, "scope-id", "", "the pipeline's `ID`, with --scope pipeline")
	cmd.Flags().StringVar(&f.pipeline, "pipeline", "", "the pipeline `NAME` or ID: --scope pipeline --scope-id its ID")
}

// resolve returns the scope, looking up --pipeline's ID.
func (f *scopeFlags) resolve(ctx context.Context, c *sdk.Client) (sdk.SecretScope, error) {
	s := sdk.SecretScope{Scope: f.scope, ScopeID: f.scopeID}
	if f.pipeline == "" {
		return s, nil
	}
	if f.scopeID != "" || (f.scope != "" && f.scope != sdk.ScopePipeline) {
		return s, usageError("--pipeline sets the scope: it does not go with --scope-id or another --scope")
	}
	p, err := c.GetPipeline(ctx, f.pipeline)
	if err != nil {
		return s, apiError(err)
	}
	return sdk.SecretScope{Scope: sdk.ScopePipeline, ScopeID: p.ID}, nil
}

func newSecretsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "secrets",
		Aliases: []string{"secret"},
		Short:   "Set, list and delete the server's secrets (values are write-only)",
	}
	var sf scopeFlags
	var value, output string
	set := &cobra.Command{
		Use:   "set NAME [--value VALUE]",
		Short: "Store a secret; without --value, its value is read from stdin",
		Long: `Store a secret. Without --value the value is read from stdin, which keeps it
out of the shell's history; one trailing newline is dropped.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("value") {
				in := cmd.InOrStdin()
				if f, ok := in.(*os.File); ok {
					if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "value of %s (end with Ctrl-D): ", args[0])
					}
				}
				b, err := io.ReadAll(in)
				if err != nil {
					return &exitError{code: exitFailure, err: err}
				}
				value = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			scope, err := sf.resolve(ctx, c)
			if err != nil {
				return err
			}
			if _, err := c.SetSecret(ctx, args[0], value, scope); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "set secret %s%s\n", args[0], scopeText(scope))
			return nil
		},
	}
	set.Flags().StringVar(&value, "value", "", "the value (default: read stdin)")
	sf.add(set)

	var lf listFlags
	ls := &cobra.Command{
		Use:   "list",
		Short: "List secrets, without their values",
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
			scope, err := sf.resolve(ctx, c)
			if err != nil {
				return err
			}
			items, err := listItems(ctx, cmd, lf, func(ctx context.Context, o sdk.ListOptions) (sdk.Page[sdk.SecretInfo], error) {
				return c.ListSecrets(ctx, sdk.ListSecretsOptions{ListOptions: o, SecretScope: scope})
			})
			if err != nil {
				return apiError(err)
			}
			return printList(cmd.OutOrStdout(), output, items, []string{"NAME", "SCOPE", "SCOPE ID", "UPDATED"}, func(s sdk.SecretInfo) []string {
				return []string{s.Name, s.Scope, s.ScopeID, ago(s.UpdatedAt)}
			})
		},
	}
	sf.add(ls)
	lf.add(ls)
	outputFlag(ls, &output)

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a secret",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			scope, err := sf.resolve(ctx, c)
			if err != nil {
				return err
			}
			if err := c.DeleteSecret(ctx, args[0], scope); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted secret %s%s\n", args[0], scopeText(scope))
			return nil
		},
	}
	sf.add(del)
	cmd.AddCommand(set, ls, del)
	return cmd
}

func scopeText(s sdk.SecretScope) string {
	switch {
	case s.Scope == "":
		return ""
	case s.ScopeID == "":
		return " (" + s.Scope + ")"
	}
	return " (" + s.Scope + " " + s.ScopeID + ")"
}
