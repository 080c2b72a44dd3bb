package expr

import (
	"errors"
	"strings"
	"testing"
)

func TestTemplateEval(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src, want string
		nexprs    int
	}{
		{"", "", 0},
		{"plain text", "plain text", 0},
		{"${ { not one }", "${ { not one }", 0},
		{"}} and {{", "}} and {{", 0},
		{"${{ branch }}", "main", 1},
		{"${{branch}}", "main", 1},
		{"${{ matrix.os }}-${{matrix.rust}}x", "linux-1.75x", 2},
		{"rust:${{ matrix.rust }}\n${{ steps.generate-version.outputs.version }}", "rust:1.75\n1.2.3", 2},
		{"$${{ sha }}$", "$abc123$", 1},
		{"${{ PROJECT_NAME }}:${{ sha }}", "oxide:abc123", 2},
		{"v=${{ steps.nope.outputs.x }};", "v=;", 1},
		{"${{ format('{0}}}', 'a') }}", "a}", 1},
		{"${{ 'a}}b' }}", "a}}b", 1},
		{`${{ "}}" }}`, "}}", 1},
		{"${{ 'it''s }}' }}", "it's }}", 1},
		{"${{ 1 == 1 }} ${{ 3 }} ${{ 1.5 }} ${{ matrix.list }} ${{ null }}", `true 3 1.5 ["a","b"] `, 5},
		{"${{ run_id }}", "42", 1},
		{"${{ matrix.experimental || false }}", "false", 1},
		{"${{ secrets.GHCR_TOKEN }}", "tok", 1},
		{"${{ runner.os }}", "Linux", 1},
		{"${{ true }}${{ false }}${{ null }}", "truefalse", 3},
		{"${{ branch }}}", "main}", 1},
		{"${{ a.true }}", "", 1},
		{"${{\n  branch\n}}", "main", 1},
		{"${{ startsWith(ref, 'refs/tags/') && 'release' || 'dev' }}", "release", 1},
	}
	ctx := testContext()
	for _, tt := range tests {
		tpl, err := ParseTemplate(tt.src)
		if err != nil {
			t.Errorf("ParseTemplate(%q): %v", tt.src, err)
			continue
		}
		if n := len(tpl.Exprs()); n != tt.nexprs {
			t.Errorf("ParseTemplate(%q) has %d expressions, want %d", tt.src, n, tt.nexprs)
		}
		got, err := tpl.Eval(ctx)
		if err != nil || got != tt.want {
			t.Errorf("ParseTemplate(%q).Eval() = %q, %v; want %q", tt.src, got, err, tt.want)
		}
		got, err = Interpolate(tt.src, ctx)
		if err != nil || got != tt.want {
			t.Errorf("Interpolate(%q) = %q, %v; want %q", tt.src, got, err, tt.want)
		}
	}
}

func TestTemplateExprs(t *testing.T) {
	t.Parallel()
	tpl, err := ParseTemplate("a ${{ matrix.os }} b ${{\tsteps.x.outputs.y == 'z' }} c")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range tpl.Exprs() {
		got = append(got, e.String())
	}
	if strings.Join(got, "|") != "matrix.os|steps.x.outputs.y == 'z'" {
		t.Errorf("Exprs() = %q", got)
	}
}

func TestTemplateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src    string
		offset int
		msg    string
	}{
		{"abc ${{ a", 4, `unterminated "${{"`},
		{"abc ${{ a }", 4, `unterminated "${{"`},
		{"x ${{ 'a }}", 6, "unterminated string"},
		{"x ${{ }}", 6, "empty expression"},
		{"x ${{}}", 5, "empty expression"},
		{"a ${{ b == }} c", 10, "unexpected end of expression"},
		{"ok ${{ a }} then ${{ foo() }}", 21, `unknown function "foo"`},
		{"${{ a }} ${{ a.b..c }}", 17, `expected property name`},
		{"line1\nline2 ${{ a = 1 }}", 18, `use "=="`},
	}
	for _, tt := range tests {
		_, err := ParseTemplate(tt.src)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Offset != tt.offset || !strings.Contains(se.Msg, tt.msg) {
			t.Errorf("ParseTemplate(%q) error = %v, want offset %d: …%s…", tt.src, err, tt.offset, tt.msg)
		}
		_, err2 := Interpolate(tt.src, testContext())
		if err2 == nil || err2.Error() != err.Error() {
			t.Errorf("Interpolate(%q) error = %v, want %v", tt.src, err2, err)
		}
	}
}

func TestTemplateRuntimeError(t *testing.T) {
	t.Parallel()
	src := "x ${{ branch }} ${{ fromJSON(branch) }}"
	tpl, err := ParseTemplate(src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpl.Eval(testContext())
	if err == nil || !strings.HasPrefix(err.Error(), "${{ fromJSON(branch) }}: fromJSON(): invalid character") {
		t.Errorf("Eval error = %v", err)
	}
	_, err2 := Interpolate(src, testContext())
	if err2 == nil || err2.Error() != err.Error() {
		t.Errorf("Interpolate error = %v, want %v", err2, err)
	}
}

func TestPartial(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src   string
		roots []string
		want  string
	}{
		{"rust:${{ matrix.rust }} ${{ steps.a.outputs.b }}", []string{"matrix"},
			"rust:1.75 ${{ steps.a.outputs.b }}"},
		{"${{matrix.os}}/${{branch}}", []string{"matrix"}, "linux/${{branch}}"},
		{"${{matrix.os}}/${{branch}}", []string{"matrix", "branch"}, "linux/main"},
		{"${{ format('{0}-{1}', matrix.os, matrix.rust) }}", []string{"matrix"}, "linux-1.75"},
		{"${{ matrix.os == 'linux' && branch }}", []string{"matrix"}, "${{ matrix.os == 'linux' && branch }}"},
		{"${{ matrix.list[steps.i] }}", []string{"matrix"}, "${{ matrix.list[steps.i] }}"},
		{"${{ success() && matrix.os }}", []string{"matrix"}, "${{ success() && matrix.os }}"},
		{"${{ hashFiles('x') }}-${{ matrix.os }}", []string{"matrix"}, "${{ hashFiles('x') }}-linux"},
		{"${{ 'const' }}", []string{"matrix"}, "const"},
		{"${{ matrix.os }}", nil, "${{ matrix.os }}"},
		{"no expressions", []string{"matrix"}, "no expressions"},
	}
	ctx := testContext()
	for _, tt := range tests {
		tpl, err := ParseTemplate(tt.src)
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", tt.src, err)
		}
		got, err := tpl.Partial(ctx, tt.roots...)
		if err != nil || got != tt.want {
			t.Errorf("Partial(%q, %q) = %q, %v; want %q", tt.src, tt.roots, got, err, tt.want)
		}
		// What stays verbatim still parses and evaluates later.
		rest, err := Interpolate(got, ctx)
		if err != nil {
			t.Errorf("Interpolate(Partial(%q)): %v", tt.src, err)
		}
		if full, _ := tpl.Eval(ctx); rest != full && !strings.Contains(tt.src, "hashFiles") {
			t.Errorf("Interpolate(Partial(%q)) = %q, Eval = %q", tt.src, rest, full)
		}
	}
}

func TestInterpolateNoExprDoesNotAllocate(t *testing.T) {
	s := strings.Repeat("echo building the project with cargo\n", 20)
	ctx := testContext()
	allocs := testing.AllocsPerRun(100, func() {
		if out, err := Interpolate(s, ctx); err != nil || out != s {
			t.Fatal("Interpolate changed a string without expressions")
		}
	})
	if allocs != 0 {
		t.Errorf("Interpolate allocates %v times for a string without expressions", allocs)
	}
}

func TestCondition(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src    string
		status Status
		want   bool
	}{
		{"", StatusSuccess, true},
		{"  \n", StatusFailure, false},
		{"", StatusCancelled, false},
		{"branch == 'main'", StatusSuccess, true},
		{"branch == 'main'", StatusFailure, false}, // implicit success()
		{"branch == 'dev'", StatusSuccess, false},
		{"branch == 'main' && event != 'pull_request'", StatusSuccess, true},
		{"startsWith(ref, 'refs/tags/v')", StatusSuccess, true},
		{"steps.changes.outputs.shared == 'true'", StatusSuccess, true},
		{"steps.changes.outputs.api == 'true' ||\n  steps.changes.outputs.shared == 'true'\n", StatusSuccess, true},
		{"steps.changes.outputs.api == 'true'", StatusSuccess, false},
		{"success()", StatusSuccess, true},
		{"success()", StatusFailure, false},
		{"success()", StatusCancelled, false},
		{"failure()", StatusSuccess, false},
		{"failure()", StatusFailure, true},
		{"failure()", StatusCancelled, false},
		{"always()", StatusSuccess, true},
		{"always()", StatusFailure, true},
		{"always()", StatusCancelled, true},
		{"cancelled()", StatusCancelled, true},
		{"cancelled()", StatusSuccess, false},
		{"failure() || branch == 'main'", StatusFailure, true},
		{"failure() && branch == 'dev'", StatusFailure, false},
		{"!cancelled()", StatusFailure, true},
		{"${{ branch == 'main' }}", StatusSuccess, true},
		{"  ${{ branch == 'dev' }}\n", StatusSuccess, false},
		{"${{ always() }}", StatusFailure, true},
		{"${{ 'x}}' == 'X}}' }}", StatusSuccess, true},
		{"matrix.experimental", StatusSuccess, false},
		{"'false'", StatusSuccess, true}, // a non-empty string
		{"steps.nope.outputs.x", StatusSuccess, false},
	}
	for _, tt := range tests {
		ctx := testContext()
		ctx.Status = tt.status
		got, err := Condition(tt.src, ctx)
		if err != nil || got != tt.want {
			t.Errorf("Condition(%q) with status %d = %v, %v; want %v", tt.src, tt.status, got, err, tt.want)
		}
	}
}

func TestConditionShortCircuitsOnFailure(t *testing.T) {
	t.Parallel()
	// With the implicit success() false, the expression is not evaluated.
	ok, err := Condition("fromJSON('bad')", &Context{Status: StatusFailure})
	if ok || err != nil {
		t.Errorf("Condition = %v, %v; want false, nil", ok, err)
	}
	if _, err := Condition("fromJSON('bad')", &Context{}); err == nil {
		t.Error("Condition(fromJSON('bad')) succeeded on success")
	}
}

func TestConditionErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src    string
		offset int
		msg    string
	}{
		{"  branch ==", 11, "unexpected end of expression"},
		{"${{ branch = 'x' }}", 11, `use "=="`},
		{"  ${{ a }} && ${{ b }}", 2, `unexpected character '$'`},
		{"${{ a", 0, `unexpected character '$'`},
		{"nope()", 0, `unknown function "nope"`},
	}
	for _, tt := range tests {
		_, err := Condition(tt.src, nil)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Offset != tt.offset || !strings.Contains(se.Msg, tt.msg) {
			t.Errorf("Condition(%q) error = %v, want offset %d: …%s…", tt.src, err, tt.offset, tt.msg)
		}
	}
}
