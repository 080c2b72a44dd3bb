package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// Environment variables that name the server and the token; they come
// before the config file.
const (
	envServer = "OXIDE_SERVER"
	envToken  = "OXIDE_TOKEN"
)

// userConfig is the user's config file, oxide/config.json in the XDG config
// directory, written by `oxide login` and `oxide config set`.
type userConfig struct {
	Server string `json:"server,omitempty"`
	Token  string `json:"token,omitempty"`
}

// configKeys are the keys of the config file, for `oxide config`.
var configKeys = []string{"server", "token"}

func (c *userConfig) field(key string) (*string, error) {
	switch key {
	case "server":
		return &c.Server, nil
	case "token":
		return &c.Token, nil
	}
	return nil, usageError("unknown config key %q: the keys are %s", key, strings.Join(configKeys, ", "))
}

// configPath is $XDG_CONFIG_HOME/oxide/config.json, else
// ~/.config/oxide/config.json.
func configPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the config file: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "oxide", "config.json"), nil
}

// loadConfig reads the config file; a missing one is empty.
func loadConfig() (userConfig, string, error) {
	var c userConfig
	path, err := configPath()
	if err != nil {
		return c, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, path, nil
	}
	if err != nil {
		return c, path, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, path, fmt.Errorf("%s: %w", path, err)
	}
	return c, path, nil
}

// saveConfig writes the config file, readable by its owner only, replacing
// it at once so that a crash leaves the old one or the new one.
func saveConfig(c userConfig) (string, error) {
	path, err := configPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return path, err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return path, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".config-*.json")
	if err != nil {
		return path, err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return path, err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return path, err
	}
	if err := f.Close(); err != nil {
		return path, err
	}
	return path, os.Rename(f.Name(), path)
}

// settings are the server and token in effect, and where each came from.
type settings struct {
	Server, ServerFrom string
	Token, TokenFrom   string
}

// resolveSettings takes each of the server and the token from its
// environment variable, else from the config file.
func resolveSettings() (settings, error) {
	var s settings
	if v := os.Getenv(envServer); v != "" {
		s.Server, s.ServerFrom = v, envServer
	}
	if v := os.Getenv(envToken); v != "" {
		s.Token, s.TokenFrom = v, envToken
	}
	if s.Server != "" && s.Token != "" {
		return s, nil
	}
	c, path, err := loadConfig()
	if err != nil {
		return s, err
	}
	if s.Server == "" && c.Server != "" {
		s.Server, s.ServerFrom = c.Server, path
	}
	if s.Token == "" && c.Token != "" {
		s.Token, s.TokenFrom = c.Token, path
	}
	return s, nil
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the server and token in effect, or get and set them in the config file",
		Long: `Show the server and token that client commands use, and where each comes
from: the ` + envServer + ` and ` + envToken + ` environment variables first, else the
config file ($XDG_CONFIG_HOME/oxide/config.json or ~/.config/oxide/config.json).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := resolveSettings()
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			show := func(key, v, from string) {
				if v == "" {
					v, from = "(not set)", ""
				}
				if from != "" {
					from = "from " + from
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", key, v, from)
			}
			show("server", s.Server, s.ServerFrom)
			show("token", redact(s.Token), s.TokenFrom)
			return tw.Flush()
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "get KEY",
		Short: "Print a value of the config file: server or token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := loadConfig()
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			v, err := c.field(args[0])
			if err != nil {
				return err
			}
			if *v == "" {
				return &exitError{code: exitFailure, err: fmt.Errorf("%s is not set", args[0])}
			}
			fmt.Fprintln(cmd.OutOrStdout(), *v)
			return nil
		},
	}, &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Set a value of the config file: server or token (an empty VALUE unsets it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := loadConfig()
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			v, err := c.field(args[0])
			if err != nil {
				return err
			}
			*v = args[1]
			if _, err := saveConfig(c); err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "path",
		Short: "Print the config file's path",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := configPath()
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			fmt.Fprintln(cmd.OutOrStdout(), path)
			return nil
		},
	})
	return cmd
}

// redact shows the start of a token only.
func redact(token string) string {
	if len(token) <= 8 {
		return strings.Repeat("*", len(token))
	}
	return token[:8] + "…"
}
