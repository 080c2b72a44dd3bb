package jobspec_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/jobspec"
)

// problems returns the problems of a *ValidationError, failing otherwise.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var ve *jobspec.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v (%T), want a *ValidationError", err, err)
	}
	return ve.Problems
}

// contains reports whether some problem contains each of wants.
func containsAll(got []string, wants ...string) bool {
	for _, w := range wants {
		found := false
		for _, g := range got {
			if strings.Contains(g, w) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := jobspec.Spec{Name: "build", Command: "make"}
	tests := []struct {
		name string
		edit func(s *jobspec.Spec)
		want []string // substrings of problems; nil: valid
	}{
		{"minimal", func(*jobspec.Spec) {}, nil},
		{"full", func(s *jobspec.Spec) {
			s.Command = ""
			s.Steps = []jobspec.Step{{Name: "a", Run: "echo a"}, {Run: "print(1)", Shell: "python"}}
			s.Shell, s.Env, s.Secrets, s.Labels = "sh", map[string]string{"GOFLAGS": "-mod=mod", "_X1": ""}, []string{"TOKEN", "KEY_2"}, []string{"linux", "gpu"}
			s.Priority, s.Timeout, s.MaxAttempts, s.Image = -3, "1h30m", 5, "alpine:3.19"
			s.Resources = &jobspec.Resources{CPU: "500m", Memory: "1Gi", GPU: 1, Arch: "arm64"}
		}, nil},
		{"no name", func(s *jobspec.Spec) { s.Name = " " }, []string{"name: required"}},
		{"long name", func(s *jobspec.Spec) { s.Name = strings.Repeat("n", 201) }, []string{"name: longer"}},
		{"nothing to run", func(s *jobspec.Spec) { s.Command = "" }, []string{"command or steps"}},
		{"both", func(s *jobspec.Spec) { s.Steps = []jobspec.Step{{Run: "x"}} }, []string{"command and steps"}},
		{"empty step", func(s *jobspec.Spec) { s.Command = ""; s.Steps = []jobspec.Step{{Name: "a"}} }, []string{"steps[0].run: required"}},
		{"shells", func(s *jobspec.Spec) {
			s.Command, s.Shell = "", "zsh"
			s.Steps = []jobspec.Step{{Run: "x", Shell: "fish"}}
		}, []string{`shell: "zsh"`, `steps[0].shell: "fish"`}},
		{"env name", func(s *jobspec.Spec) { s.Env = map[string]string{"A-B": "1", "9X": "2"} }, []string{`"9X"`, `"A-B"`}},
		{"secrets", func(s *jobspec.Spec) { s.Secrets = []string{"OK", "no way", "OK"} }, []string{`secrets[1]: "no way"`, `secrets[2]: "OK" is listed twice`}},
		{"label", func(s *jobspec.Spec) { s.Labels = []string{"linux", ""} }, []string{"labels[1]: empty"}},
		{"timeout syntax", func(s *jobspec.Spec) { s.Timeout = "10" }, []string{"timeout: \"10\" is not a duration"}},
		{"timeout negative", func(s *jobspec.Spec) { s.Timeout = "-1m" }, []string{"timeout: must be positive"}},
		{"timeout long", func(s *jobspec.Spec) { s.Timeout = "200h" }, []string{"timeout: longer"}},
		{"attempts", func(s *jobspec.Spec) { s.MaxAttempts = 101 }, []string{"max_attempts"}},
		{"resources", func(s *jobspec.Spec) { s.Resources = &jobspec.Resources{CPU: "two", Memory: "1 GB", GPU: -1} }, []string{"resources.cpu", "resources.memory", "resources.gpu"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ok
			tt.edit(&s)
			err := s.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			got := problems(t, err)
			if !containsAll(got, tt.want...) || len(got) != len(tt.want) {
				t.Errorf("problems = %q, want %d matching %q", got, len(tt.want), tt.want)
			}
		})
	}
}

func TestTimeoutDuration(t *testing.T) {
	t.Parallel()
	s := jobspec.Spec{Timeout: "90s"}
	if d := s.TimeoutDuration(); d != 90*time.Second {
		t.Errorf("TimeoutDuration = %s", d)
	}
	s.Timeout = ""
	if d := s.TimeoutDuration(); d != 0 {
		t.Errorf("TimeoutDuration of none = %s", d)
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // substring of the one problem; "" for success
	}{
		{`{"name":"a","command":"x","resources":{"cpu":"2","memory":"1Gi"}}`, ""},
		{`{"name":"a","command":"x","colour":"red"}`, `colour: unknown field`},
		{`{"name":"a","priority":"high"}`, `priority: want a number, got a JSON string`},
		{`{"name":"a","steps":{"run":"x"}}`, `steps: want an array`},
		{`{"name":"a"`, `spec: `},
		{`{"name":"a"} {}`, `data after`},
	}
	for _, tt := range tests {
		_, err := jobspec.Decode([]byte(tt.in))
		if tt.want == "" {
			if err != nil {
				t.Errorf("Decode(%s): %v", tt.in, err)
			}
			continue
		}
		if got := problems(t, err); len(got) != 1 || !strings.Contains(got[0], tt.want) {
			t.Errorf("Decode(%s) problems = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// The JSON of a Spec is the JobSpec of docs/api.md.
func TestSpecJSON(t *testing.T) {
	t.Parallel()
	in := `{"name":"n","steps":[{"name":"s","run":"r","shell":"sh"}],"shell":"bash","env":{"A":"1"},"secrets":["S"],"labels":["l"],"priority":2,"timeout":"10m","max_attempts":3,"image":"alpine:3.19","resources":{"cpu":"2","memory":"1Gi"}}`
	s, err := jobspec.Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("round trip:\n got %s\nwant %s", out, in)
	}
}

func tmpl(t *testing.T, params, spec string) jobspec.Template {
	t.Helper()
	tp, err := jobspec.DecodeTemplate(json.RawMessage(params), json.RawMessage(spec))
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

const deployParams = `[
	{"name": "service", "type": "string", "required": true},
	{"name": "replicas", "type": "int", "default": 2},
	{"name": "dry_run", "type": "bool"},
	{"name": "env", "type": "enum", "values": ["staging", "production"], "default": "staging"},
	{"name": "prio", "type": "enum", "values": [1, 5, 10], "default": 1}
]`

const deploySpec = `{
	"name": "deploy {{ .service }} to {{ .env }}",
	"command": "deploy --replicas={{ .replicas }}{{ if .dry_run }} --dry-run{{ end }} {{ .service }}",
	"env": {"TARGET_{{ .env }}": "{{ .service }}"},
	"labels": ["{{ .env }}"],
	"priority": "{{ .prio }}",
	"max_attempts": "{{ .replicas }}"
}`

func TestInstantiate(t *testing.T) {
	t.Parallel()
	tp := tmpl(t, deployParams, deploySpec)
	if err := tp.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}

	var values map[string]any
	dec := json.NewDecoder(strings.NewReader(`{"service": "api", "replicas": 3, "dry_run": true, "env": "production", "prio": 10.0}`))
	dec.UseNumber()
	if err := dec.Decode(&values); err != nil {
		t.Fatal(err)
	}
	got, err := tp.Instantiate(values)
	if err != nil {
		t.Fatalf("Instantiate: %v", err)
	}
	want := jobspec.Spec{
		Name:        "deploy api to production",
		Command:     "deploy --replicas=3 --dry-run api",
		Env:         map[string]string{"TARGET_production": "api"},
		Labels:      []string{"production"},
		Priority:    10,
		MaxAttempts: 3,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Instantiate =\n%+v\nwant\n%+v", got, want)
	}

	// Defaults fill what is not given.
	got, err = tp.Instantiate(map[string]any{"service": "web"})
	if err != nil {
		t.Fatalf("Instantiate with defaults: %v", err)
	}
	if got.Command != "deploy --replicas=2 web" || got.Priority != 1 || got.Labels[0] != "staging" {
		t.Errorf("Instantiate with defaults = %+v", got)
	}
}

func TestInstantiateParameterErrors(t *testing.T) {
	t.Parallel()
	tp := tmpl(t, deployParams, deploySpec)
	tests := []struct {
		values map[string]any
		want   []string
	}{
		{map[string]any{}, []string{`"service": required`}},
		{map[string]any{"service": nil}, []string{`"service": required`}},
		{map[string]any{"service": "a", "colour": "red", "size": 1}, []string{`"colour": unknown`, `"size": unknown`}},
		{map[string]any{"service": 5}, []string{`"service": want a string, got 5`}},
		{map[string]any{"service": "a", "replicas": "3"}, []string{`"replicas": want an integer, got "3"`}},
		{map[string]any{"service": "a", "replicas": json.Number("2.5")}, []string{`"replicas": want an integer`}},
		{map[string]any{"service": "a", "dry_run": "yes"}, []string{`"dry_run": want a boolean`}},
		{map[string]any{"service": "a", "env": "prod"}, []string{`"env": "prod" is not one of "staging", "production"`}},
		{map[string]any{"service": "a", "prio": "5"}, []string{`"prio": "5" is not one of 1, 5, 10`}},
		// All problems at once.
		{map[string]any{"x": 1, "replicas": true}, []string{`"x": unknown`, `"service": required`, `"replicas": want an integer`}},
	}
	for _, tt := range tests {
		_, err := tp.Instantiate(tt.values)
		got := problems(t, err)
		if !containsAll(got, tt.want...) || len(got) != len(tt.want) {
			t.Errorf("Instantiate(%v) problems = %q, want %q", tt.values, got, tt.want)
		}
	}

	// A spec that is invalid once filled is reported too.
	tp = tmpl(t, `[{"name": "t", "type": "string"}]`, `{"name": "x", "command": "y", "timeout": "{{ .t }}"}`)
	if err := tp.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	_, err := tp.Instantiate(map[string]any{"t": "soon"})
	if got := problems(t, err); !containsAll(got, `timeout: "soon"`) {
		t.Errorf("problems = %q", got)
	}
}

func TestTemplateValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		params, spec string
		want         []string // nil: valid
	}{
		{`[]`, `{"name": "static", "command": "true"}`, nil},
		{`[{"name": "x", "type": "string"}]`, `{"name": "{{ .x }}", "command": "echo {{ .x | printf \"%q\" }}"}`, nil},
		{`[]`, `{"name": "static"}`, []string{"command or steps"}}, // no placeholders: fully validated
		{`[{"name": "bad-name", "type": "string"}]`, `{}`, []string{`parameters[0].name: "bad-name"`}},
		{`[{"name": "a", "type": "float"}]`, `{}`, []string{`type "float"`}},
		{`[{"name": "a", "type": "string"}, {"name": "a", "type": "int"}]`, `{}`, []string{`"a": declared twice`}},
		{`[{"name": "e", "type": "enum"}]`, `{}`, []string{`enum needs values`}},
		{`[{"name": "e", "type": "enum", "values": ["a", "a", {}]}]`, `{}`, []string{`values[1] is listed twice`, `values[2] is not a string`}},
		{`[{"name": "s", "type": "string", "values": ["a"]}]`, `{}`, []string{`values are for enum`}},
		{`[{"name": "n", "type": "int", "default": "3"}]`, `{}`, []string{`"n": default: want an integer`}},
		{`[{"name": "e", "type": "enum", "values": ["a"], "default": "b"}]`, `{}`, []string{`"e": default: "b" is not one of "a"`}},
		{`[{"name": "r", "type": "string", "required": true, "default": "x"}]`, `{}`, []string{`required parameter takes no default`}},
		{`[]`, `{"name": "{{ .nope }}", "command": "x"}`, []string{`name: {{ .nope }} names no parameter`}},
		{`[]`, `{"name": "x", "steps": [{"run": "{{ .a "}]}`, []string{`steps[0].run: placeholder:`}},
		{`[{"name": "p", "type": "string"}]`, `{"name": "x", "command": "y", "priority": "{{ .p }}"}`, []string{`priority: want a number`}},
		{`[{"name": "p", "type": "int"}]`, `{"name": "x", "command": "y", "colour": "{{ .p }}"}`, []string{`colour: unknown field`}},
		{`[]`, `[1, 2]`, []string{`must be a JSON object`}},
	}
	for _, tt := range tests {
		tp := tmpl(t, tt.params, tt.spec)
		err := tp.Validate()
		if tt.want == nil {
			if err != nil {
				t.Errorf("Validate(%s, %s): %v", tt.params, tt.spec, err)
			}
			continue
		}
		got := problems(t, err)
		if !containsAll(got, tt.want...) || len(got) != len(tt.want) {
			t.Errorf("Validate(%s, %s) problems = %q, want %q", tt.params, tt.spec, got, tt.want)
		}
	}
}
