package local

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/spec"
)

// Unsupported returns a message for every stage instance whose environment
// this process cannot provide, or nil when it can provide them all: the
// host always, containers when it has a container engine.
func Unsupported(r *plan.Run, containers bool) []string {
	var out []string
	for _, n := range r.Nodes {
		env := n.Job.Environment
		if env == nil || env.Type == spec.EnvHost || env.Type == spec.EnvContainer && containers {
			continue
		}
		what := string(env.Type)
		switch {
		case env.Type == spec.EnvContainer && env.Container != nil:
			what = "container image " + env.Container.Image + " (needs a Docker engine)"
		case env.Type == spec.EnvNix:
			what = "nix environment (needs nix on an agent)"
		case env.Type == spec.EnvFirecracker:
			what = "firecracker microVM (needs a firecracker agent)"
		}
		out = append(out, fmt.Sprintf("stage %q asks for a %s", n.Name, what))
	}
	return out
}

// secrets resolves a node's secret references, then adds the command
// line's other secrets by name. A step's own secrets reach only that step.
// Every value is masked unless its reference says masked: false; the
// command line's always are. A required secret that cannot be found fails
// the stage before it starts.
func (e *execution) secrets(refs []spec.SecretRef) ([]spec.Secret, error) {
	var out []spec.Secret
	seen := map[string]bool{}
	var problems []string
	for _, ref := range refs {
		v, ok, err := e.lookupSecret(ref)
		switch {
		case err != nil:
			problems = append(problems, err.Error())
			continue
		case !ok:
			if ref.Required {
				problems = append(problems, "missing required secret "+describe(ref))
			}
			continue
		}
		out = append(out, spec.Secret{Name: ref.Name, Value: v, Masked: ref.Masked, Step: ref.Step})
		seen[ref.Name], seen[ref.Path] = true, true
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	for _, k := range slices.Sorted(maps.Keys(e.opts.Secrets)) {
		name := k
		if seen[k] || !envName.MatchString(k) {
			name = "" // consumed by a reference, or no variable name: mask only
		}
		out = append(out, spec.Secret{Name: name, Value: e.opts.Secrets[k], Masked: true})
	}
	return out, nil
}

// lookupSecret finds a reference's value: a secret given on the command line
// under its path or its name, else, for the environment provider, the
// process environment variable named by its path or name; an empty
// variable counts as unset. With a key, the value is a JSON object and the
// secret is that key's value.
func (e *execution) lookupSecret(ref spec.SecretRef) (string, bool, error) {
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

func (e *execution) rawSecret(ref spec.SecretRef) (string, bool) {
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

func describe(ref spec.SecretRef) string {
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
