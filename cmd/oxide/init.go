package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// starter is a pipeline written by `oxide init` for one kind of project.
type starter struct {
	marker string // file whose presence identifies the kind
	kind   string
	stages string // the stages: block
}

// starters are tried in order; the last one fits any project.
var starters = []starter{
	{"go.mod", "Go", `  - name: build
    steps:
      - name: vet
        run: go vet ./...
      - name: build
        run: go build ./...
  - name: test
    steps:
      - name: test
        run: go test ./...
`},
	{"Cargo.toml", "Rust", `  - name: build
    steps:
      - name: fmt
        run: cargo fmt --check
      - name: build
        run: cargo build --locked
  - name: test
    steps:
      - name: test
        run: cargo test --locked
`},
	{"package.json", "Node.js", `  - name: install
    steps:
      - name: install
        run: npm ci
  - name: test
    steps:
      - name: lint
        run: npm run lint --if-present
      - name: test
        run: npm test
`},
	{"pyproject.toml", "Python", `  - name: test
    steps:
      - name: install
        run: python3 -m pip install -e .
      - name: test
        run: python3 -m pytest
`},
	{"", "generic", `  - name: build
    steps:
      - name: hello
        run: echo "Hello from Oxide on $OXIDE_BRANCH"
`},
}

func newInitCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a starter " + defaultPipeline + " fitted to this project",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(defaultPipeline); err == nil && !force {
				return &exitError{code: exitFailure, err: fmt.Errorf("%s exists; use --force to overwrite it", defaultPipeline)}
			}
			s := detectStarter()
			name := "pipeline"
			if wd, err := os.Getwd(); err == nil {
				name = filepath.Base(wd)
			}
			doc := fmt.Sprintf("# Oxide CI pipeline: run it with `oxide run`.\nversion: \"1\"\nname: %q\n\nstages:\n%s", name, s.stages)
			if err := os.MkdirAll(filepath.Dir(defaultPipeline), 0o755); err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			if err := os.WriteFile(defaultPipeline, []byte(doc), 0o644); err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			fmt.Fprintf(os.Stdout, "wrote %s for a %s project\n", defaultPipeline, s.kind)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing pipeline")
	return cmd
}

func detectStarter() starter {
	for _, s := range starters {
		if s.marker == "" {
			return s
		}
		if _, err := os.Stat(s.marker); !errors.Is(err, fs.ErrNotExist) {
			return s
		}
	}
	panic("unreachable: the last starter fits any project")
}
