package local

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/secrets"
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
	for _, k := range slices.Sorted(maps.Keys(n.Matrix)) {
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
// command line's other secrets by name. A step's own secrets reach only
// that step. Every value is masked unless its reference says masked: false;
// the command line's always are.
func (e *execution) secrets(s *pipeline.Stage) ([]runner.Secret, error) {
	type scoped struct {
		ref  pipeline.SecretRef
		step string
	}
	var refs []scoped
	for _, ref := range s.Secrets {
		refs = append(refs, scoped{ref, ""})
	}
	for _, st := range s.Steps {
		for _, ref := range st.Secrets {
			refs = append(refs, scoped{ref, st.ID})
		}
	}
	var out []runner.Secret
	seen := map[string]bool{}
	var problems []string
	for _, r := range refs {
		v, ok, err := e.lookupSecret(r.ref)
		switch {
		case err != nil:
			problems = append(problems, err.Error())
			continue
		case !ok:
			if r.ref.Required {
				problems = append(problems, "missing required secret "+describe(r.ref))
			}
			continue
		}
		out = append(out, runner.Secret{Name: r.ref.Name, Value: v, Masked: r.ref.Masked, Step: r.step})
		seen[r.ref.Name], seen[r.ref.Path] = true, true
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	for _, k := range slices.Sorted(maps.Keys(e.opts.Secrets)) {
		name := k
		if seen[k] || !envName.MatchString(k) {
			name = "" // consumed by a reference, or no variable name: mask only
		}
		out = append(out, runner.Secret{Name: name, Value: e.opts.Secrets[k], Masked: true})
	}
	return out, nil
}

// lookupSecret finds a reference's value: a secret given on the command line
// under its path or its name, else, for the environment provider, the
// process environment variable named by its path or name; an empty
// variable counts as unset. With a key, the value is a JSON object and the
// secret is that key's value.
func (e *execution) lookupSecret(ref pipeline.SecretRef) (string, bool, error) {
	v, ok := e.rawSecret(ref)
	if !ok || ref.Key == "" {
		return v, ok, nil
	}
	f, err := secrets.Field(v, ref.Key)
	if err != nil {
		return "", false, fmt.Errorf("secret %s %w", ref.Name, err)
	}
	return f, true, nil
}

func (e *execution) rawSecret(ref pipeline.SecretRef) (string, bool) {
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

// envName matches what can be an environment variable's name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func describe(ref pipeline.SecretRef) string {
	d := fmt.Sprintf("%s (provider %s", ref.Name, ref.Provider)
	if ref.Key != "" {
		d += ", key " + ref.Key
	}
	if ref.Path != "" {
		d += ", path " + ref.Path
	}
	if ref.Provider != "environment" {
		d += "; pass it with --secret " + ref.Name + "=… or --secrets-file"
	}
	return d + ")"
}
