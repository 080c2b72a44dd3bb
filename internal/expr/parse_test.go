package expr

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src    string
		offset int
		msg    string // a substring of the message
	}{
		{"", 0, "empty expression"},
		{"   ", 3, "empty expression"},
		{"a ==", 4, "unexpected end of expression"},
		{"a = b", 2, `use "=="`},
		{"a & b", 2, `"&&"`},
		{"a | b", 2, `"||"`},
		{"a - b", 2, `unexpected character '-'`},
		{"a @ b", 2, `unexpected character '@'`},
		{"x == 'abc", 5, "unterminated string"},
		{`x == "a""`, 5, "unterminated string"},
		{"foo()", 0, `unknown function "foo"`},
		{"x || bar(1)", 5, `unknown function "bar"`},
		{"startsWith('a')", 0, "startsWith() takes 2 arguments, got 1"},
		{"success(1)", 0, "success() takes 0 arguments, got 1"},
		{"join()", 0, "join() takes 1 to 2 arguments, got 0"},
		{"toJSON(1, 2)", 0, "toJSON() takes 1 argument, got 2"},
		{"hashFiles()", 0, "hashFiles() takes at least 1 argument, got 0"},
		{"format('{0} {1}', 1)", 7, "placeholder {1}"},
		{"format('{', 1)", 7, "invalid placeholder"},
		{"format('}', 1)", 7, `unmatched "}"`},
		{"a.", 2, `expected property name after "."`},
		{"a.1", 2, `expected property name after "."`},
		{"(a", 2, `expected ")", found end of expression`},
		{"a[0", 3, `expected "]"`},
		{"a[0 b]", 4, `expected "]", found identifier b`},
		{"a b", 2, `unexpected identifier "b"`},
		{"a,b", 1, `unexpected ","`},
		{"1abc", 0, `invalid number "1abc"`},
		{"1.", 0, `invalid number "1."`},
		{"0x", 0, `invalid number "0x"`},
		{"!", 1, "unexpected end of expression"},
		{"true()", 4, `unexpected "("`},
		{"a.b(1)", 3, `unexpected "("`},
		{"contains(a, b,)", 14, `unexpected ")"`},
		{"f(", 0, `unknown function "f"`},
		{"a == b)", 6, `unexpected ")"`},
		{"a\n  && ==", 7, `unexpected "=="`},
		{strings.Repeat("(", 200) + "a" + strings.Repeat(")", 200), maxDepth, "nested too deeply"},
		{strings.Repeat("!", 200) + "a", maxDepth, "nested too deeply"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.src)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) error = %v, want *SyntaxError", tt.src, err)
			continue
		}
		if se.Offset != tt.offset || !strings.Contains(se.Msg, tt.msg) {
			t.Errorf("Parse(%q) error = %d: %s, want %d: …%s…", tt.src, se.Offset, se.Msg, tt.offset, tt.msg)
		}
	}
}

func TestSyntaxErrorString(t *testing.T) {
	t.Parallel()
	err := (&SyntaxError{Offset: 7, Msg: "boom"}).Error()
	if err != "offset 7: boom" {
		t.Errorf("Error() = %q", err)
	}
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	for _, src := range []string{
		"branch == 'main' && event != 'pull_request'",
		"startsWith(ref, 'refs/tags/v')",
		"steps.changes.outputs.shared == 'true'",
		"steps.changes.outputs.api == 'true' ||\n  steps.changes.outputs.shared == 'true'\n",
		"matrix.experimental || false",
		"hashFiles('Cargo.lock')",
		"secrets.GHCR_TOKEN",
		"runner.os",
		"success()",
		"steps.generate-version.outputs.version",
		"a_b-c.d-e_f",
		"a[0]['b'].c[x.y]",
		"-1 < 0x1F && 1.5e3 >= 1e-2",
		"fromJSON('{}').a",
		"!(a || b) && !!c",
		"SUCCESS() || ALWAYS() || Failure() || cancelled()",
		"format('{0}', 'a', 'unused')",
		"  \t\r\n x \n",
	} {
		e, err := Parse(src)
		if err != nil {
			t.Errorf("Parse(%q): %v", src, err)
			continue
		}
		if e.String() != src {
			t.Errorf("Parse(%q).String() = %q", src, e.String())
		}
	}
}

func TestRefs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src  string
		want []Ref
	}{
		{"steps.build.outputs.v == matrix.os && branch",
			[]Ref{{[]string{"steps", "build", "outputs", "v"}, 0}, {[]string{"matrix", "os"}, 25}, {[]string{"branch"}, 38}}},
		{"steps.generate-version.outputs.version", []Ref{{[]string{"steps", "generate-version", "outputs", "version"}, 0}}},
		{"matrix['os']", []Ref{{[]string{"matrix", "os"}, 0}}},
		{"a[b.c].d", []Ref{{[]string{"b", "c"}, 2}, {[]string{"a"}, 0}}},
		{"a[0].b", []Ref{{[]string{"a"}, 0}}},
		{"fromJSON(x).y", []Ref{{[]string{"x"}, 9}}},
		{"format('{0}', matrix.os)", []Ref{{[]string{"matrix", "os"}, 14}}},
		{"a.b || !a.b || a.b.c", []Ref{{[]string{"a", "b"}, 0}, {[]string{"a", "b", "c"}, 15}}},
		{"success() && 'x' == true", nil},
		{"null", nil},
		{" PROJECT_NAME", []Ref{{[]string{"PROJECT_NAME"}, 1}}},
	}
	for _, tt := range tests {
		e, err := Parse(tt.src)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.src, err)
		}
		if got := e.Refs(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q).Refs() = %v, want %v", tt.src, got, tt.want)
		}
	}
}

// TestTemplateRefOffsets checks that the offsets of a template's refs are
// into the whole template.
func TestTemplateRefOffsets(t *testing.T) {
	t.Parallel()
	const s = "echo ${{ github.sha }} and ${{secrets.X}}"
	tmpl, err := ParseTemplate(s)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range tmpl.Exprs() {
		for _, r := range e.Refs() {
			got = append(got, s[r.Offset:])
		}
	}
	want := []string{"github.sha }} and ${{secrets.X}}", "secrets.X}}"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("refs start at %q, want %q", got, want)
	}
}

func TestUsesStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src  string
		want bool
	}{
		{"success()", true},
		{"always() || x", true},
		{"!FAILURE()", true},
		{"contains(format('{0}', cancelled()), 'true')", true},
		{"hashFiles('x')", false},
		{"branch == 'main'", false},
		{"success", false}, // a variable named success
	}
	for _, tt := range tests {
		e, err := Parse(tt.src)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.src, err)
		}
		if got := e.UsesStatus(); got != tt.want {
			t.Errorf("Parse(%q).UsesStatus() = %v, want %v", tt.src, got, tt.want)
		}
	}
}
