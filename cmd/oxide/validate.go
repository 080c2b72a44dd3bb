package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
)

func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate [FILE|DIR ...]",
		Short: "Check pipelines and print every problem as FILE:LINE:COL: message",
		Long: `Check pipeline files (default ` + defaultPipeline + `). A directory means every
.yaml and .yml file beneath it. Every problem of every file is printed as
FILE:LINE:COL: message, and what a valid file asks for that Oxide does not
do yet as FILE:LINE:COL: warning: message. The exit status is 2 when any
file is invalid; warnings alone leave it 0.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{defaultPipeline}
			}
			files, err := pipelineFiles(args)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			bad := 0
			for _, f := range files {
				p, err := pipeline.Load(f)
				var g *plan.Graph
				if err == nil {
					g, err = plan.Build(p)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					bad++
					continue
				}
				printWarnings(p)
				fmt.Fprintf(os.Stdout, "%s: ok (%d stages, %d stage instances)\n", f, len(p.Stages), len(g.Nodes))
			}
			if bad > 0 {
				return &exitError{code: exitUsage, err: fmt.Errorf("%d of %d pipeline files invalid", bad, len(files))}
			}
			return nil
		},
	}
}

// printWarnings prints to stderr what p asks for that Oxide does not do yet.
func printWarnings(p *pipeline.Pipeline) {
	for _, w := range p.Warnings {
		fmt.Fprintln(os.Stderr, w)
	}
}

// pipelineFiles expands directories into the YAML files beneath them.
func pipelineFiles(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, a)
			continue
		}
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}
