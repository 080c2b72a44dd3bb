package expr

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

// testValues returns the values of a typical step's context.
func testValues() map[string]any {
	matrix := map[string]any{
		"os":   "linux",
		"rust": "1.75",
		"n":    3,
		"flag": true,
		"list": []any{"a", "b"},
	}
	return map[string]any{
		"branch": "main",
		"ref":    "refs/tags/v1.2.3",
		"event":  "push",
		"sha":    "abc123",
		"run_id": 42,
		"matrix": matrix,
		"steps": map[string]any{
			"generate-version": map[string]any{"outputs": map[string]string{"version": "1.2.3"}},
			"changes":          map[string]any{"outputs": map[string]string{"api": "false", "shared": "true"}},
		},
		"secrets":      map[string]string{"GHCR_TOKEN": "tok"},
		"runner":       map[string]any{"os": "Linux"},
		"PROJECT_NAME": "oxide",
		"tags":         []string{"x", "Y"},
		"empty":        "",
		"zero":         0.0,
	}
}

func testContext() *Context { return &Context{Values: testValues()} }

func TestEval(t *testing.T) {
	t.Parallel()
	vals := testValues()
	tests := []struct {
		src  string
		want any
	}{
		// Literals.
		{"'it''s'", "it's"},
		{`"say ""hi"""`, `say "hi"`},
		{`"it's"`, "it's"},
		{"''", ""},
		{"1", 1.0},
		{"-2.5", -2.5},
		{"0x1F", 31.0},
		{"0XfF", 255.0},
		{"1e3", 1000.0},
		{"2.5E-1", 0.25},
		{"true", true},
		{"false", false},
		{"null", nil},

		// Paths.
		{"branch", "main"},
		{"run_id", 42.0},
		{"PROJECT_NAME", "oxide"},
		{"matrix.os", "linux"},
		{"matrix['os']", "linux"},
		{`matrix["rust"]`, "1.75"},
		{"matrix.n", 3.0},
		{"matrix.list[1]", "b"},
		{"matrix.list['1']", "b"},
		{"matrix.list[2]", nil},
		{"matrix.list[-1]", nil},
		{"matrix.list[0.5]", nil},
		{"matrix.list.a", nil},
		{"tags[1]", "Y"},
		{"tags[true]", nil},
		{"steps.generate-version.outputs.version", "1.2.3"},
		{"steps['generate-version'].outputs['version']", "1.2.3"},
		{"steps.changes.outputs[matrix.os]", nil},
		{"steps.nope.outputs.version", nil},
		{"secrets.GHCR_TOKEN", "tok"},
		{"secrets.MISSING", nil},
		{"runner.os", "Linux"},
		{"nope", nil},
		{"branch.length", nil},
		{"matrix", vals["matrix"]},
		{"fromJSON('{\"a\": {\"1\": \"x\"}}').a[1]", "x"},

		// ||, && yield operand values, short-circuit.
		{"matrix.experimental || false", false},
		{"matrix.experimental || 'dflt'", "dflt"},
		{"'' || 'b'", "b"},
		{"'a' || 'b'", "a"},
		{"null || null", nil},
		{"0 || ''", ""},
		{"'a' && 'b'", "b"},
		{"'' && 'b'", ""},
		{"0 && 'b'", 0.0},
		{"null && true", nil},
		{"true || fromJSON('bad')", true},
		{"false && fromJSON('bad')", false},
		{"matrix.flag && matrix.os", "linux"},

		// ==, != with loose coercion.
		{"'MAIN' == 'main'", true},
		{"branch == 'main'", true},
		{"1 == 1.0", true},
		{"'1' == 1", true},
		{"' 1 ' == 1", true},
		{"'0x10' == 16", true},
		{"'1e2' == 100", true},
		{"'abc' == 0", false},
		{"null == 0", true},
		{"null == ''", true},
		{"null == false", true},
		{"null == null", true},
		{"true == 1", true},
		{"false == 0", true},
		{"'true' == true", false},
		{"'' == 0", true},
		{"'' == false", true},
		{"matrix == matrix", true},
		{"matrix == steps", false},
		{"matrix == 0", false},
		{"tags == tags", true},
		{"matrix.list == matrix.list", true},
		{"matrix.list == tags", false},
		{"run_id == '42'", true},
		{"matrix.n == 3", true},
		{"1 != 2", true},
		{"'a' != 'A'", false},
		{"'abc' != 0", true},
		{"'Infinity' == 1e999", true},
		{"'-Infinity' < -1e308", true},

		// Orderings.
		{"1 < 2", true},
		{"2 < 1", false},
		{"2 <= 2", true},
		{"3 > 2", true},
		{"2 >= 3", false},
		{"'a' < 'B'", true},
		{"'b' > 'A'", true},
		{"'abc' < 'abd'", true},
		{"'ab' < 'abc'", true},
		{"'abc' <= 'ABC'", true},
		{"'10' > 9", true},
		{"'abc' < 1", false},
		{"'abc' >= 1", false},
		{"null < 1", true},
		{"true > false", true},
		{"matrix > 0", false},

		// !.
		{"!branch", false},
		{"!''", true},
		{"!null", true},
		{"!0", true},
		{"!!'x'", true},
		{"!matrix", false},
		{"!fromJSON('[]')", false},

		// Precedence and grouping.
		{"true || false && false", true},
		{"(true || false) && false", false},
		{"!true == false", true},
		{"1 < 2 == true", true},
		{"'a' == 'a' && 'b' == 'b'", true},
		{"false || 1 < 2 && 'x'", "x"},
		{"branch == 'main' && event != 'pull_request'", true},
		{"steps.changes.outputs.api == 'true' ||\n  steps.changes.outputs.shared == 'true'\n", true},
	}
	ctx := &Context{Values: vals}
	for _, tt := range tests {
		e, err := Parse(tt.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.src, err)
			continue
		}
		got, err := e.Eval(ctx)
		if err != nil {
			t.Errorf("Eval(%q): %v", tt.src, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Eval(%q) = %#v, want %#v", tt.src, got, tt.want)
		}
	}
}

func TestEvalNilContext(t *testing.T) {
	t.Parallel()
	e, err := Parse("matrix.os || success()")
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.Eval(nil)
	if err != nil || v != true {
		t.Errorf("Eval(nil) = %v, %v; want true", v, err)
	}
}

func TestEvalErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ src, msg string }{
		{"fromJSON('bad')", "fromJSON(): invalid character"},
		{"false || fromJSON('')", "fromJSON(): unexpected end of JSON input"},
		{"format(branch, 1) || format(fromJSON('\"{1}\"'), 'a')", "format(): placeholder {1}"},
		{"toJSON(fromJSON('[1]')[0] == x) && toJSON(nan)", "toJSON(): NaN cannot be represented"},
		{"startsWith(fromJSON('x'), 'a')", "fromJSON()"},
		{"!fromJSON('x')", "fromJSON()"},
		{"a[fromJSON('x')]", "fromJSON()"},
		{"fromJSON('x')[0]", "fromJSON()"},
		{"fromJSON('x') == 1", "fromJSON()"},
		{"1 == fromJSON('x')", "fromJSON()"},
	} {
		e, err := Parse(tt.src)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.src, err)
		}
		_, err = e.Eval(&Context{Values: map[string]any{"nan": math.NaN()}})
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Eval(%q) error = %v, want …%s…", tt.src, err, tt.msg)
		}
	}
}

func TestTruthy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v    any
		want bool
	}{
		{nil, false},
		{false, false},
		{true, true},
		{0.0, false},
		{math.Copysign(0, -1), false},
		{math.NaN(), false},
		{0, false},
		{1, true},
		{-1.5, true},
		{math.Inf(1), true},
		{"", false},
		{"0", true},
		{"false", true},
		{map[string]any{}, true},
		{[]any{}, true},
		{[]string(nil), true},
	}
	for _, tt := range tests {
		if got := Truthy(tt.v); got != tt.want {
			t.Errorf("Truthy(%#v) = %v, want %v", tt.v, got, tt.want)
		}
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v    any
		want string
	}{
		{nil, ""},
		{true, "true"},
		{false, "false"},
		{"s", "s"},
		{3.0, "3"},
		{3, "3"},
		{int64(-7), "-7"},
		{-0.0, "0"},
		{math.Copysign(0, -1), "0"},
		{1.5, "1.5"},
		{0.1, "0.1"},
		{1e20, "100000000000000000000"},
		{1e21, "1e+21"},
		{1.5e-7, "1.5e-07"},
		{math.NaN(), "NaN"},
		{math.Inf(1), "Infinity"},
		{math.Inf(-1), "-Infinity"},
		{[]any{"a", 1.0, nil}, `["a",1,null]`},
		{[]string{"a<b"}, `["a<b"]`},
		{map[string]any{"b": 1, "a": "x"}, `{"a":"x","b":1}`},
		{map[string]string{"k": "v"}, `{"k":"v"}`},
		{[]any{math.NaN()}, "[NaN]"}, // not JSON: falls back to fmt
	}
	for _, tt := range tests {
		if got := String(tt.v); got != tt.want {
			t.Errorf("String(%#v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestCompareFold(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"a", "", 1},
		{"", "a", -1},
		{"abc", "ABC", 0},
		{"straße", "STRASSE", 1}, // ß has no single-rune upper case
		{"é", "É", 0},
		{"a", "b", -1},
		{"B", "a", 1},
	}
	for _, tt := range tests {
		if got := compareFold(tt.a, tt.b); got != tt.want {
			t.Errorf("compareFold(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
