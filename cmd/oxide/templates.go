package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

func newTemplatesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "templates",
		Aliases: []string{"template"},
		Short:   "Manage job templates and submit jobs from them",
	}
	var output string
	var lf listFlags
	ls := &cobra.Command{
		Use:   "list",
		Short: "List templates",
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
			items, err := listItems(ctx, cmd, lf, c.ListTemplates)
			if err != nil {
				return apiError(err)
			}
			return printList(cmd.OutOrStdout(), output, items, []string{"NAME", "ID", "PARAMETERS", "DESCRIPTION"}, func(t sdk.Template) []string {
				names := make([]string, len(t.Parameters))
				for i, p := range t.Parameters {
					names[i] = p.Name
				}
				return []string{t.Name, t.ID, strings.Join(names, ","), t.Description}
			})
		},
	}
	outputFlag(ls, &output)
	lf.add(ls)

	get := &cobra.Command{
		Use:   "get ID|NAME",
		Short: "Show a template",
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
			t, err := c.GetTemplate(ctx, args[0])
			if err != nil {
				return apiError(err)
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(w, t)
			}
			printFields(w, "name", t.Name, "id", t.ID, "description", t.Description,
				"created", stamp(&t.CreatedAt), "updated", stamp(&t.UpdatedAt))
			fmt.Fprintln(w, "\nparameters:")
			tb := newTable(w, "  NAME", "TYPE", "REQUIRED", "DEFAULT", "VALUES")
			for _, p := range t.Parameters {
				def := ""
				if p.Default != nil {
					def = fmt.Sprint(p.Default)
				}
				vals := make([]string, len(p.Values))
				for i, v := range p.Values {
					vals[i] = fmt.Sprint(v)
				}
				tb.row("  "+p.Name, p.Type, strconv.FormatBool(p.Required), def, strings.Join(vals, ","))
			}
			tb.flush()
			fmt.Fprintln(w, "\nspec:")
			b, _ := json.MarshalIndent(t.Spec, "", "  ")
			fmt.Fprintf(w, "%s\n", b)
			return nil
		},
	}
	outputFlag(get, &output)

	var file string
	create := &cobra.Command{
		Use:   "create --file FILE",
		Short: "Store a template from a JSON or YAML file",
		Long: `Store a template, read from FILE (JSON, or YAML if it ends in .yaml or .yml):
{"name", "description", "parameters": [{"name", "type": "string|int|bool|enum",
"required", "default", "values"}], "spec": a job spec with {{ .param }} in its strings}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			req, err := readTemplate(file)
			if err != nil {
				return err
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			t, err := c.CreateTemplate(ctx, req)
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), t)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created template %s (%s)\n", t.Name, t.ID)
			return nil
		},
	}
	create.Flags().StringVarP(&file, "file", "f", "", "the template, a JSON or YAML `FILE`")
	create.MarkFlagRequired("file")
	outputFlag(create, &output)

	var updateFile string
	update := &cobra.Command{
		Use:   "update ID|NAME --file FILE",
		Short: "Replace a template with a JSON or YAML file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			req, err := readTemplate(updateFile)
			if err != nil {
				return err
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			t, err := c.UpdateTemplate(ctx, args[0], req)
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), t)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "updated template %s (%s)\n", t.Name, t.ID)
			return nil
		},
	}
	update.Flags().StringVarP(&updateFile, "file", "f", "", "the template, a JSON or YAML `FILE`")
	update.MarkFlagRequired("file")
	outputFlag(update, &output)

	del := &cobra.Command{
		Use:   "delete ID|NAME",
		Short: "Delete a template",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			if err := c.DeleteTemplate(ctx, args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted template %s\n", args[0])
			return nil
		},
	}

	var params []string
	inst := &cobra.Command{
		Use:   "instantiate ID|NAME [--param K=V ...]",
		Short: "Submit a job from a template",
		Long: `Submit a job from a template. Each --param K=V is converted to the type the
template gives K (int, bool; string and enum as written).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			raw, err := parseAssignments("--param", params)
			if err != nil {
				return err
			}
			c, err := newClient("")
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			t, err := c.GetTemplate(ctx, args[0])
			if err != nil {
				return apiError(err)
			}
			values, err := typedParams(t.Parameters, raw)
			if err != nil {
				return err
			}
			j, err := c.InstantiateTemplate(ctx, t.ID, values)
			if err != nil {
				return apiError(err)
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), j)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "submitted job %s (%s) from template %s: %s\n", j.ID, j.Name, t.Name, j.State)
			return nil
		},
	}
	inst.Flags().StringArrayVarP(&params, "param", "p", nil, "a parameter, `K=V` (repeatable)")
	outputFlag(inst, &output)

	cmd.AddCommand(ls, get, create, update, del, inst)
	return cmd
}

// readTemplate reads a template file, JSON or YAML, rejecting unknown keys.
func readTemplate(file string) (sdk.TemplateRequest, error) {
	var req sdk.TemplateRequest
	b, err := os.ReadFile(file)
	if err != nil {
		return req, &exitError{code: exitUsage, err: err}
	}
	if strings.HasSuffix(file, ".yaml") || strings.HasSuffix(file, ".yml") {
		if b, err = yaml.YAMLToJSON(b); err != nil {
			return req, &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", file, err)}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", file, err)}
	}
	if req.Name == "" {
		return req, usageError("%s: the template has no name", file)
	}
	return req, nil
}

// typedParams converts K=V strings to the types of the template's
// parameters. Unknown names stay strings: the server names them.
func typedParams(defs []sdk.Parameter, raw map[string]string) (map[string]any, error) {
	types := make(map[string]string, len(defs))
	for _, d := range defs {
		types[d.Name] = d.Type
	}
	values := make(map[string]any, len(raw))
	for k, v := range raw {
		switch types[k] {
		case sdk.ParamInt:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, usageError("--param %s: want an integer, got %q", k, v)
			}
			values[k] = n
		case sdk.ParamBool:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, usageError("--param %s: want true or false, got %q", k, v)
			}
			values[k] = b
		default:
			values[k] = v
		}
	}
	return values, nil
}
