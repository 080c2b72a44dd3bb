// Package jobspec is the job platform's job description: the JobSpec that
// POST /api/v1/jobs accepts and that the scheduler queues, its validation,
// and job templates, whose typed parameters are substituted into "{{ .param }}"
// placeholders of a spec.
//
// It has no dependencies beyond the standard library, so that the server,
// the scheduler and any client can share it.
package jobspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits of a spec.
const (
	MaxNameLen     = 200
	MaxAttempts    = 100
	MaxTimeout     = 7 * 24 * time.Hour
	maxStepsInSpec = 1000
)

// Spec describes a job: a Command, or Steps run in order in one workspace.
// Its JSON is the JobSpec of docs/api.md.
type Spec struct {
	Name    string `json:"name"`
	Command string `json:"command,omitempty"`
	Steps   []Step `json:"steps,omitempty"`
	// Shell runs Command and the steps that set none: bash (default), sh
	// or python.
	Shell string            `json:"shell,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
	// Secrets names stored secrets, exposed to the job as environment
	// variables of the same names.
	Secrets []string `json:"secrets,omitempty"`
	// Labels a worker must all have to claim the job.
	Labels   []string `json:"labels,omitempty"`
	Priority int      `json:"priority,omitempty"` // higher first
	// Timeout is a Go duration ("10m"); empty: none.
	Timeout string `json:"timeout,omitempty"`
	// MaxAttempts bounds the attempts; 0: the store's default.
	MaxAttempts int        `json:"max_attempts,omitempty"`
	Image       string     `json:"image,omitempty"` // a container image, for container environments
	Resources   *Resources `json:"resources,omitempty"`
}

// Step is one step of a Spec.
type Step struct {
	Name  string `json:"name,omitempty"`
	Run   string `json:"run"`
	Shell string `json:"shell,omitempty"`
}

// Resources is what a job needs of its worker.
type Resources struct {
	CPU    string `json:"cpu,omitempty"`    // cores: "2", "0.5" or millicores "500m"
	Memory string `json:"memory,omitempty"` // bytes with an optional suffix: "512Mi", "1Gi", "2G"
	GPU    int    `json:"gpu,omitempty"`
	Arch   string `json:"arch,omitempty"` // amd64, arm64, …
	OS     string `json:"os,omitempty"`   // linux, darwin, …
}

// ValidationError lists every problem found in a spec or in template
// parameters, each naming the field or parameter.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return "invalid job spec: " + strings.Join(e.Problems, "; ")
}

// problems collects messages; err returns them as a *ValidationError, or
// nil when there are none.
type problems []string

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &ValidationError{Problems: p}
}

var (
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	cpuRe    = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?|[0-9]+m)$`)
	memoryRe = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(k|Ki|M|Mi|G|Gi|T|Ti)?$`)
)

// Shells are the shells a spec may name.
var Shells = []string{"bash", "sh", "python"}

// Validate reports every problem of s as a *ValidationError.
func (s *Spec) Validate() error {
	var p problems
	switch {
	case strings.TrimSpace(s.Name) == "":
		p.addf("name: required")
	case len(s.Name) > MaxNameLen:
		p.addf("name: longer than %d bytes", MaxNameLen)
	}
	switch {
	case s.Command == "" && len(s.Steps) == 0:
		p.addf("command or steps: one is required")
	case s.Command != "" && len(s.Steps) > 0:
		p.addf("command and steps: set only one")
	case len(s.Steps) > maxStepsInSpec:
		p.addf("steps: more than %d", maxStepsInSpec)
	}
	for i, st := range s.Steps {
		if strings.TrimSpace(st.Run) == "" {
			p.addf("steps[%d].run: required", i)
		}
		if st.Shell != "" && !slices.Contains(Shells, st.Shell) {
			p.addf("steps[%d].shell: %q is not one of %s", i, st.Shell, strings.Join(Shells, ", "))
		}
	}
	if s.Shell != "" && !slices.Contains(Shells, s.Shell) {
		p.addf("shell: %q is not one of %s", s.Shell, strings.Join(Shells, ", "))
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		if !envName.MatchString(k) {
			p.addf("env: %q is not a valid variable name", k)
		}
	}
	for i, name := range s.Secrets {
		if !envName.MatchString(name) {
			p.addf("secrets[%d]: %q is not a valid secret name", i, name)
		} else if slices.Contains(s.Secrets[:i], name) {
			p.addf("secrets[%d]: %q is listed twice", i, name)
		}
	}
	for i, l := range s.Labels {
		if strings.TrimSpace(l) == "" {
			p.addf("labels[%d]: empty", i)
		}
	}
	if s.Timeout != "" {
		d, err := time.ParseDuration(s.Timeout)
		switch {
		case err != nil:
			p.addf("timeout: %q is not a duration like \"10m\" or \"1h30m\"", s.Timeout)
		case d <= 0:
			p.addf("timeout: must be positive")
		case d > MaxTimeout:
			p.addf("timeout: longer than %s", MaxTimeout)
		}
	}
	if s.MaxAttempts < 0 || s.MaxAttempts > MaxAttempts {
		p.addf("max_attempts: must be between 0 and %d", MaxAttempts)
	}
	if r := s.Resources; r != nil {
		if r.CPU != "" && !cpuRe.MatchString(r.CPU) {
			p.addf("resources.cpu: %q is not a number of cores (\"2\", \"0.5\") or millicores (\"500m\")", r.CPU)
		}
		if r.Memory != "" && !memoryRe.MatchString(r.Memory) {
			p.addf("resources.memory: %q is not a size like \"512Mi\" or \"2G\"", r.Memory)
		}
		if r.GPU < 0 {
			p.addf("resources.gpu: must not be negative")
		}
	}
	return p.err()
}

// TimeoutDuration returns the parsed Timeout; 0 when there is none (or it
// is invalid, which Validate reports).
func (s *Spec) TimeoutDuration() time.Duration {
	d, _ := time.ParseDuration(s.Timeout)
	return max(d, 0)
}

// Decode reads a spec from JSON strictly: unknown fields and trailing data
// are errors, reported as a *ValidationError. It does not Validate.
func Decode(data []byte) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Spec{}, &ValidationError{Problems: []string{describeJSONError(err)}}
	}
	if dec.More() {
		return Spec{}, &ValidationError{Problems: []string{"spec: data after the JSON object"}}
	}
	return s, nil
}

// describeJSONError turns an encoding/json error into a message that names
// the field.
func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "spec"
		}
		return fmt.Sprintf("%s: want %s, got a JSON %s", field, jsonKind(te.Type.String()), te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("spec: malformed JSON at offset %d: %v", se.Offset, se)
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name, _ := strconv.Unquote(f)
		return fmt.Sprintf("%s: unknown field", name)
	}
	return "spec: " + strings.TrimPrefix(msg, "json: ")
}

func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "a boolean"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	}
	return "an object"
}
