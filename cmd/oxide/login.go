package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

func newLoginCmd() *cobra.Command {
	var server, token string
	cmd := &cobra.Command{
		Use:   "login --server URL --token TOKEN",
		Short: "Check a server and a token, and save them in the config file",
		Long: `Check that the server answers and accepts the token, then save both in the
config file (readable by you only) for the client commands. --token - reads
the token from stdin, which keeps it out of the shell's history. The flags
default to ` + envServer + ` and ` + envToken + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if server == "" {
				server = os.Getenv(envServer)
			}
			if token == "" {
				token = os.Getenv(envToken)
			}
			server = strings.TrimRight(server, "/")
			if token == "-" {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return &exitError{code: exitFailure, err: err}
				}
				token = strings.TrimSpace(string(b))
			}
			if server == "" || token == "" {
				return usageError("login needs --server URL and --token TOKEN")
			}
			if !strings.HasPrefix(server, "http://") && !strings.HasPrefix(server, "https://") {
				return usageError("--server %q: want an http:// or https:// URL", server)
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			c := sdk.New(server, token)
			h, err := c.Health(ctx)
			if err != nil {
				return apiError(fmt.Errorf("%s does not answer as an Oxide server: %w", server, err))
			}
			if h.Status != "ok" {
				return &exitError{code: exitFailure, err: fmt.Errorf("%s is not healthy: status %q", server, h.Status)}
			}
			// Any role may read; a rejected token is 401.
			if _, err := c.ListPipelines(ctx, sdk.ListOptions{Limit: 1}); err != nil && !errors.Is(err, sdk.ErrForbidden) {
				if errors.Is(err, sdk.ErrUnauthorized) {
					return &exitError{code: exitFailure, err: fmt.Errorf("%s rejected the token: %w", server, err)}
				}
				return apiError(err)
			}
			cfg, _, err := loadConfig()
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			cfg.Server, cfg.Token = server, token
			path, err := saveConfig(cfg)
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s; saved in %s\n", server, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the server's `URL` (default $"+envServer+")")
	cmd.Flags().StringVar(&token, "token", "", "the API `TOKEN`, or - to read it from stdin (default $"+envToken+")")
	return cmd
}
