package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/sdk"
)

func newPipelinesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "pipelines",
		Aliases: []string{"pipeline"},
		Short:   "List, show, create, update and delete the server's pipelines",
	}
	var output string
	var lf listFlags
	ls := &cobra.Command{
		Use:   "list",
		Short: "List pipelines",
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
			items, err := listItems(ctx, cmd, lf, c.ListPipelines)
			if err != nil {
				return apiError(err)
			}
			return printList(cmd.OutOrStdout(), output, items, []string{"NAME", "ID", "REPOSITORY", "UPDATED"}, func(p sdk.Pipeline) []string {
				return []string{p.Name, p.ID, p.Repository, ago(p.UpdatedAt)}
			})
		},
	}
	outputFlag(ls, &output)
	lf.add(ls)

	get := &cobra.Command{
		Use:   "get ID|NAME",
		Short: "Show a pipeline and its definition",
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
			p, err := c.GetPipeline(ctx, args[0])
			if err != nil {
				return apiError(err)
			}
			return printPipeline(cmd.OutOrStdout(), output, p, true)
		},
	}
	outputFlag(get, &output)

	var file, newFile, repository, name string
	create := &cobra.Command{
		Use:   "create [NAME] [--file FILE]",
		Short: "Store a pipeline: NAME defaults to the definition's name",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			def, p, err := readPipeline(file)
			if err != nil {
				return err
			}
			name := p.Name
			if len(args) == 1 {
				name = args[0]
			}
			if name == "" {
				return usageError("%s has no name: give one, `oxide pipelines create NAME`", file)
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			created, err := c.CreatePipeline(ctx, sdk.CreatePipelineRequest{Name: name, Definition: def, Repository: repository})
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), created)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created pipeline %s (%s)\n", created.Name, created.ID)
			return nil
		},
	}
	create.Flags().StringVarP(&file, "file", "f", defaultPipeline, "the definition, a pipeline YAML `FILE`")
	create.Flags().StringVar(&repository, "repository", "", "the repository the pipeline builds")
	outputFlag(create, &output)

	update := &cobra.Command{
		Use:   "update ID|NAME [--file FILE] [--name NEW] [--repository URL]",
		Short: "Change a pipeline's definition, name or repository",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var req sdk.UpdatePipelineRequest
			if cmd.Flags().Changed("file") {
				def, _, err := readPipeline(newFile)
				if err != nil {
					return err
				}
				req.Definition = &def
			}
			if cmd.Flags().Changed("name") {
				req.Name = &name
			}
			if cmd.Flags().Changed("repository") {
				req.Repository = &repository
			}
			if req == (sdk.UpdatePipelineRequest{}) {
				return usageError("nothing to update: give --file, --name or --repository")
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			p, err := c.UpdatePipeline(ctx, args[0], req)
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), p)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "updated pipeline %s (%s)\n", p.Name, p.ID)
			return nil
		},
	}
	update.Flags().StringVarP(&newFile, "file", "f", "", "the new definition, a pipeline YAML `FILE`")
	update.Flags().StringVar(&name, "name", "", "the new name")
	update.Flags().StringVar(&repository, "repository", "", "the new repository")
	outputFlag(update, &output)

	del := &cobra.Command{
		Use:   "delete ID|NAME",
		Short: "Delete a pipeline",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			if err := c.DeletePipeline(ctx, args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted pipeline %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(ls, get, create, update, del)
	return cmd
}

// readPipeline reads and checks a pipeline definition here first, so that
// its problems and warnings are reported as `oxide validate` reports them
// (exit status 2 for problems).
func readPipeline(file string) (string, *pipeline.Pipeline, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", nil, &exitError{code: exitUsage, err: err}
	}
	p, err := pipeline.Parse(file, data)
	if err != nil {
		return "", nil, invalid(err)
	}
	printWarnings(p)
	return string(data), p, nil
}

func printPipeline(w io.Writer, output string, p sdk.Pipeline, definition bool) error {
	if output == "json" {
		return writeJSON(w, p)
	}
	err := printFields(w, "name", p.Name, "id", p.ID, "repository", p.Repository,
		"created", stamp(&p.CreatedAt), "updated", stamp(&p.UpdatedAt))
	if err == nil && definition {
		_, err = fmt.Fprintf(w, "\n%s", p.Definition)
		if len(p.Definition) > 0 && p.Definition[len(p.Definition)-1] != '\n' {
			fmt.Fprintln(w)
		}
	}
	return err
}

// upsertPipeline stores the definition under name: it creates the pipeline,
// or updates its definition when it differs.
func upsertPipeline(ctx context.Context, c *sdk.Client, name, def string) (sdk.Pipeline, error) {
	p, err := c.GetPipeline(ctx, name)
	switch {
	case err == nil && p.Definition == def:
		return p, nil
	case err == nil:
		return c.UpdatePipeline(ctx, p.ID, sdk.UpdatePipelineRequest{Definition: &def})
	case !errors.Is(err, sdk.ErrNotFound):
		return p, err
	}
	p, err = c.CreatePipeline(ctx, sdk.CreatePipelineRequest{Name: name, Definition: def})
	if errors.Is(err, sdk.ErrConflict) { // created meanwhile by someone else
		return c.UpdatePipeline(ctx, name, sdk.UpdatePipelineRequest{Definition: &def})
	}
	return p, err
}
