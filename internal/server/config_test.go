package server

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// load parses args as oxide-server does (its flags plus --config) with env
// as the only OXIDE_* variables, then calls Load with the file named by
// --config.
func load(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	var cfg Config
	var configFile string
	fs := pflag.NewFlagSet("oxide-server", pflag.ContinueOnError)
	cfg.Flags(fs)
	fs.StringVar(&configFile, "config", "", "")
	fs.VisitAll(func(f *pflag.Flag) {
		name := "OXIDE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		t.Setenv(name, "") // restored when the test ends
		os.Unsetenv(name)
	})
	for k, v := range env {
		t.Setenv(k, v)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return cfg, Load(fs, configFile)
}

// writeFile writes a config file in a fresh directory and returns its path.
func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadPrecedence: a flag beats OXIDE_* in the environment, which beats
// the config file (.toml or .yaml), which beats the default.
func TestLoadPrecedence(t *testing.T) {
	files := map[string]string{
		"oxide.toml": `
data-dir = "/from/file"
http-addr = "file:1"
grpc-addr = "file:2"
agents = 3
agent-labels = ["linux", "gpu"]
host-only = true
lease = "45s"
`,
		"oxide.yaml": `
data-dir: /from/file
http-addr: "file:1"
grpc-addr: "file:2"
agents: 3
agent-labels: [linux, gpu]
host-only: true
lease: 45s
`,
	}
	for name, text := range files {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, name, text)

			// The file alone.
			cfg, err := load(t, []string{"--config", path}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DataDir != "/from/file" || cfg.HTTPAddr != "file:1" || cfg.GRPCAddr != "file:2" ||
				cfg.Agents != 3 || !slices.Equal(cfg.AgentLabels, []string{"linux", "gpu"}) ||
				!cfg.HostOnly || cfg.Lease != 45*time.Second {
				t.Errorf("from the file: %+v", cfg)
			}
			if cfg.LogLevel != "info" || cfg.AgentTimeout != 30*time.Second {
				t.Errorf("not in the file: log level %q, agent timeout %s; want the defaults", cfg.LogLevel, cfg.AgentTimeout)
			}

			// The environment over the file, flags over both.
			cfg, err = load(t,
				[]string{"--config", path, "--http-addr", "flag:1", "--agent-labels", "arm64", "--agent-labels", "big,fast"},
				map[string]string{
					"OXIDE_HTTP_ADDR":    "env:1",
					"OXIDE_GRPC_ADDR":    "env:2",
					"OXIDE_AGENT_LABELS": "env-a,env-b",
					"OXIDE_AGENTS":       "0",
					"OXIDE_LOG_LEVEL":    "debug",
				})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.HTTPAddr != "flag:1" {
				t.Errorf("http-addr %q, want the flag's", cfg.HTTPAddr)
			}
			if !slices.Equal(cfg.AgentLabels, []string{"arm64", "big", "fast"}) {
				t.Errorf("agent-labels %q, want the flags'", cfg.AgentLabels)
			}
			if cfg.GRPCAddr != "env:2" || cfg.Agents != 0 || cfg.LogLevel != "debug" {
				t.Errorf("grpc-addr %q, agents %d, log-level %q: want the environment's", cfg.GRPCAddr, cfg.Agents, cfg.LogLevel)
			}
			if cfg.DataDir != "/from/file" || cfg.Lease != 45*time.Second {
				t.Errorf("data-dir %q, lease %s: want the file's", cfg.DataDir, cfg.Lease)
			}

			// A list from the environment.
			cfg, err = load(t, []string{"--config", path}, map[string]string{"OXIDE_AGENT_LABELS": "env-a,env-b"})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.AgentLabels, []string{"env-a", "env-b"}) {
				t.Errorf("agent-labels %q, want the environment's", cfg.AgentLabels)
			}
		})
	}

	t.Run("no file", func(t *testing.T) {
		cfg, err := load(t, nil, map[string]string{"OXIDE_HOST_ONLY": "true"})
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.HostOnly || cfg.DataDir != "./oxide-data" || cfg.HTTPAddr != "127.0.0.1:8080" || cfg.Agents != 1 || cfg.AgentLabels != nil {
			t.Errorf("defaults and the environment: %+v", cfg)
		}
	})
}

// TestLoadErrors: what Load refuses, naming the culprit.
func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		file string // name and text, "name\ntext"
		env  map[string]string
		want string // in the error
	}{
		{"unknown toml key", "c.toml\ndata-dir = \"x\"\nagent-lables = [\"a\"]\n", nil, `unknown setting "agent-lables"`},
		{"unknown yaml key", "c.yaml\nhttp_addr: x\n", nil, `unknown setting "http_addr"`},
		{"config in the file", "c.yaml\nconfig: other.yaml\n", nil, `unknown setting "config"`},
		{"bad extension", "c.ini\ndata-dir=x\n", nil, "want a .toml, .yaml or .json file"},
		{"bad toml", "c.toml\ndata-dir = \n", nil, "c.toml"},
		{"bad value in the file", "c.yaml\nagents: many\n", nil, "agents"},
		{"bad value in the environment", "", map[string]string{"OXIDE_AGENTS": "many"}, "OXIDE_AGENTS"},
		{"bad duration in the environment", "", map[string]string{"OXIDE_LEASE": "soon"}, "OXIDE_LEASE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var args []string
			if tt.file != "" {
				name, text, _ := strings.Cut(tt.file, "\n")
				args = []string{"--config", writeFile(t, name, text)}
			}
			_, err := load(t, args, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load: %v, want an error with %q", err, tt.want)
			}
		})
	}

	// A file that does not exist.
	_, err := load(t, []string{"--config", filepath.Join(t.TempDir(), "missing.toml")}, nil)
	if !os.IsNotExist(err) {
		t.Errorf("Load of a missing file: %v, want not exist", err)
	}
}
