package plan

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/oxide-ci/oxide/internal/pipeline"
)

func stage(name string, deps ...string) *pipeline.Stage {
	return &pipeline.Stage{Name: name, DependsOn: deps, HasDependsOn: deps != nil,
		Steps: []*pipeline.Step{{Name: "s", ID: name + "-s", Run: "true"}}}
}

// root is a stage with `depends_on: []`.
func root(name string) *pipeline.Stage {
	s := stage(name)
	s.HasDependsOn = true
	return s
}

func names(nodes []*Instance) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

func TestBuildOrderAndDependencies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		stages []*pipeline.Stage
		order  []string
		deps   map[string][]string
	}{
		{
			name:   "stages without depends_on follow the previous one",
			stages: []*pipeline.Stage{stage("a"), stage("b"), stage("c")},
			order:  []string{"a", "b", "c"},
			deps:   map[string][]string{"a": nil, "b": {"a"}, "c": {"b"}},
		},
		{
			name:   "empty depends_on makes a root",
			stages: []*pipeline.Stage{stage("a"), root("b"), stage("c", "a", "b")},
			order:  []string{"a", "b", "c"},
			deps:   map[string][]string{"a": nil, "b": nil, "c": {"a", "b"}},
		},
		{
			name:   "a dependency declared later comes first",
			stages: []*pipeline.Stage{stage("deploy", "build"), root("build")},
			order:  []string{"build", "deploy"},
			deps:   map[string][]string{"build": nil, "deploy": {"build"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, s := range tt.stages {
				if s.DependsOn == nil && s.HasDependsOn {
					s.DependsOn = []string{}
				}
			}
			// root("b") passes a nil slice; mark roots explicitly.
			for _, s := range tt.stages {
				if want, ok := tt.deps[s.Name]; ok && want == nil && s.Name != tt.stages[0].Name {
					s.HasDependsOn = true
				}
			}
			g, err := Build(&pipeline.Pipeline{Stages: tt.stages})
			if err != nil {
				t.Fatal(err)
			}
			if got := names(g.Nodes); !slices.Equal(got, tt.order) {
				t.Errorf("order = %v, want %v", got, tt.order)
			}
			for _, n := range g.Nodes {
				if got := names(n.Deps); !slices.Equal(got, tt.deps[n.Name]) {
					t.Errorf("%s deps = %v, want %v", n.Name, got, tt.deps[n.Name])
				}
			}
		})
	}
}

func TestBuildCycle(t *testing.T) {
	t.Parallel()
	_, err := Build(&pipeline.Pipeline{Stages: []*pipeline.Stage{stage("a", "b"), stage("b", "a")}})
	if err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("err = %v, want a cycle", err)
	}
}

func combos(t *testing.T, m *pipeline.Matrix) []string {
	t.Helper()
	cs, err := Expand(m)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range cs {
		keys := slices.Sorted(maps.Keys(c.Values))
		var kv []string
		for _, k := range keys {
			kv = append(kv, fmt.Sprintf("%s=%v", k, c.Values[k]))
		}
		out = append(out, strings.Join(kv, ","))
	}
	return out
}

func TestExpand(t *testing.T) {
	t.Parallel()
	dims := []pipeline.Dimension{{Name: "os", Values: []any{"linux", "macos", "windows"}}, {Name: "rust", Values: []any{"1.74", "stable"}}}
	tests := []struct {
		name string
		m    *pipeline.Matrix
		want []string
	}{
		{"product", &pipeline.Matrix{Dimensions: dims}, []string{
			"os=linux,rust=1.74", "os=linux,rust=stable", "os=macos,rust=1.74", "os=macos,rust=stable", "os=windows,rust=1.74", "os=windows,rust=stable"}},
		{"exclude", &pipeline.Matrix{Dimensions: dims, Exclude: []map[string]any{{"os": "windows", "rust": "1.74"}, {"os": "macos"}}}, []string{
			"os=linux,rust=1.74", "os=linux,rust=stable", "os=windows,rust=stable"}},
		{"include extends matching combinations", &pipeline.Matrix{Dimensions: dims[:1], Include: []map[string]any{{"os": "linux", "target": "musl"}, {"os": "macos", "target": "darwin"}}}, []string{
			"os=linux,target=musl", "os=macos,target=darwin", "os=windows"}},
		{"include that matches nothing is added", &pipeline.Matrix{Dimensions: dims, Exclude: []map[string]any{{"os": "macos"}, {"os": "windows"}}, Include: []map[string]any{{"os": "linux", "rust": "nightly", "experimental": true}}}, []string{
			"os=linux,rust=1.74", "os=linux,rust=stable", "experimental=true,os=linux,rust=nightly"}},
		{"include never overwrites a dimension value", &pipeline.Matrix{Dimensions: dims[:1], Include: []map[string]any{{"os": "bsd"}}}, []string{
			"os=linux", "os=macos", "os=windows", "os=bsd"}},
		{"numbers and strings compare by text", &pipeline.Matrix{Dimensions: []pipeline.Dimension{{Name: "v", Values: []any{1.75, "2"}}}, Exclude: []map[string]any{{"v": "1.75"}}}, []string{"v=2"}},
		{"only include", &pipeline.Matrix{Include: []map[string]any{{"a": 1}, {"a": 2}}}, []string{"a=1", "a=2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := combos(t, tt.m); !slices.Equal(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestExpandErrors(t *testing.T) {
	t.Parallel()
	big := &pipeline.Matrix{}
	for _, d := range []string{"a", "b", "c"} {
		big.Dimensions = append(big.Dimensions, pipeline.Dimension{Name: d, Values: []any{1, 2, 3, 4, 5, 6, 7}})
	}
	if _, err := Expand(big); err == nil || !strings.Contains(err.Error(), "more than 256") {
		t.Errorf("343 combinations: err = %v", err)
	}
	all := &pipeline.Matrix{Dimensions: []pipeline.Dimension{{Name: "a", Values: []any{1}}}, Exclude: []map[string]any{{"a": 1}}}
	if _, err := Expand(all); err == nil {
		t.Error("everything excluded: no error")
	}
}

func TestMatrixSubstitution(t *testing.T) {
	t.Parallel()
	s := &pipeline.Stage{
		Name: "test",
		Matrix: &pipeline.Matrix{Dimensions: []pipeline.Dimension{
			{Name: "os", Values: []any{"linux", "bsd"}}, {Name: "rust", Values: []any{"1.75"}}}, FailFast: true},
		Environment: &pipeline.Environment{Type: pipeline.EnvContainer, Container: &pipeline.Container{Image: "rust:${{ matrix.rust }}"}},
		Agent:       &pipeline.AgentSelector{Labels: []string{"${{ matrix.os }}"}},
		Steps: []*pipeline.Step{{
			Name: "build", ID: "build",
			Run:             "cargo build --target ${{ matrix.os }} # ${{ steps.x.outputs.y }}",
			With:            map[string]any{"args": []any{"--os=${{ matrix.os }}"}},
			ContinueOnError: "${{ matrix.experimental || false }}",
		}},
	}
	g, err := Build(&pipeline.Pipeline{Stages: []*pipeline.Stage{s}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(g.Nodes), []string{"test (linux, 1.75)", "test (bsd, 1.75)"}; !slices.Equal(got, want) {
		t.Fatalf("names = %v, want %v", got, want)
	}
	n := g.Nodes[1]
	st := n.Stage.Steps[0]
	for got, want := range map[string]string{
		n.Stage.Environment.Container.Image:     "rust:1.75",
		n.Stage.Agent.Labels[0]:                 "bsd",
		st.Run:                                  "cargo build --target bsd # ${{ steps.x.outputs.y }}",
		st.With["args"].([]any)[0].(string):     "--os=bsd",
		st.ContinueOnError:                      "false",
		s.Steps[0].Run[len(s.Steps[0].Run)-24:]: "${{ steps.x.outputs.y }}",
		s.Environment.Container.Image:           "rust:${{ matrix.rust }}",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if n.Source != s || g.Nodes[0].Stage == n.Stage {
		t.Error("instances must share the source and own their stage copies")
	}
}

func TestMatrixInStageName(t *testing.T) {
	t.Parallel()
	s := stage("test-${{ matrix.os }}")
	s.Matrix = &pipeline.Matrix{Dimensions: []pipeline.Dimension{{Name: "os", Values: []any{"linux"}}}}
	g, err := Build(&pipeline.Pipeline{Stages: []*pipeline.Stage{s, stage("after")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(g.Nodes); !slices.Equal(got, []string{"test-linux", "after"}) {
		t.Errorf("names = %v", got)
	}
	if got := names(g.Nodes[1].Deps); !slices.Equal(got, []string{"test-linux"}) {
		t.Errorf("after waits for %v, want every instance of the matrix stage", got)
	}
}
