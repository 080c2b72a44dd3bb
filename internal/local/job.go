package local

import (
	"fmt"
	"slices"
	"strings"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
)

// job builds the runner's job for n, resolving its secrets. A required
// secret that cannot be found fails the stage before it starts.
func (e *execution) job(n *plan.Node) (*runner.Job, error) {
	secrets, err := e.secrets(n.Stage)
	if err != nil {
		return nil, err
	}
	values := e.values(n)
	named := make(map[string]any, len(secrets))
	for _, s := range secrets {
		named[s.Name] = s.Value
	}
	values["secrets"] = named
	status := runner.StatusSuccess
	for _, d := range n.Deps {
		if e.run.Stages[d.Index].failed {
			status = runner.StatusFailure
		}
	}
	g := e.opts.Git
	extra := []string{
		"OXIDE_RUN_ID=" + e.run.ID,
		"OXIDE_PIPELINE=" + e.run.Pipeline.Name,
		"OXIDE_STAGE=" + n.Name,
		"OXIDE_WORKSPACE=" + e.opts.Workspace,
		"OXIDE_BRANCH=" + g.Branch,
		"OXIDE_REF=" + g.Ref,
		"OXIDE_SHA=" + g.SHA,
		"OXIDE_EVENT=" + g.Event,
	}
	for _, k := range sortedKeys(n.Matrix) {
		extra = append(extra, "OXIDE_MATRIX_"+strings.ToUpper(k)+"="+fmt.Sprint(n.Matrix[k]))
	}
	return &runner.Job{
		RunID:     e.run.ID,
		Stage:     n.Name,
		Steps:     n.Stage.Steps,
		Parallel:  n.Stage.Parallel,
		Timeout:   n.Stage.Timeout,
		Variables: e.variables(n),
		Secrets:   secrets,
		Workspace: e.opts.Workspace,
		Values:    values,
		Status:    status,
		Extra:     extra,
	}, nil
}

// secrets resolves the secret references of s and its steps, then adds the
// command line's secrets by name. Every value is masked unless its reference
// says masked: false.
func (e *execution) secrets(s *pipeline.Stage) ([]runner.Secret, error) {
	refs := slices.Clone(s.Secrets)
	for _, st := range s.Steps {
		refs = append(refs, st.Secrets...)
	}
	var out []runner.Secret
	seen := map[string]bool{}
	var missing []string
	for _, ref := range refs {
		v, ok := e.lookupSecret(ref)
		if !ok {
			if ref.Required {
				missing = append(missing, describe(ref))
			}
			continue
		}
		out = append(out, runner.Secret{Name: ref.Name, Value: v, Masked: ref.Masked})
		seen[ref.Name] = true
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing required secret %s", strings.Join(missing, ", "))
	}
	for _, k := range sortedKeys(e.opts.Secrets) {
		if !seen[k] {
			out = append(out, runner.Secret{Name: k, Value: e.opts.Secrets[k], Masked: true})
		}
	}
	return out, nil
}

// lookupSecret finds a reference's value: a secret given on the command line
// under its path or its name, else, for the environment provider, the
// process environment variable named by its path or name; an empty
// variable counts as unset.
func (e *execution) lookupSecret(ref pipeline.SecretRef) (string, bool) {
	for _, k := range []string{ref.Path, ref.Name} {
		if v, ok := e.opts.Secrets[k]; ok && k != "" {
			return v, true
		}
	}
	if ref.Provider == "environment" && e.opts.LookupEnv != nil {
		for _, k := range []string{ref.Path, ref.Name} {
			if v, ok := e.opts.LookupEnv(k); ok && k != "" && v != "" {
				return v, true
			}
		}
	}
	return "", false
}

func describe(ref pipeline.SecretRef) string {
	d := fmt.Sprintf("%s (provider %s", ref.Name, ref.Provider)
	if ref.Path != "" {
		d += ", path " + ref.Path
	}
	if ref.Provider != "environment" {
		d += "; pass it with --secret " + ref.Name + "=… or --secrets-file"
	}
	return d + ")"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
