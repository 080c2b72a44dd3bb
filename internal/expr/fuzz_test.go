package expr

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	"",
	"plain",
	"${{ sha }}",
	"rust:${{ matrix.rust }} ${{ steps.a.outputs.b }}",
	"${{ steps.generate-version.outputs.version }}",
	"${{ matrix.experimental || false }}",
	"${{ hashFiles('Cargo.lock', '**/*.rs', '!x/**') }}",
	"${{ format('{0}}}-{1}', 'a', 1) }}",
	"${{ 'a}}b' }} ${{ \"it\"\"s\" }}",
	"${{ branch == 'main' && event != 'pull_request' }}",
	"${{ startsWith(ref, 'refs/tags/v') }}",
	"${{ toJSON(fromJSON('{\"a\": [1, 2.5e3, 0x1F, null, true]}').a) }}",
	"${{ join(tags, ', ') }} ${{ contains(tags, 'x') }}",
	"${{ !(a < b) || a >= -1 && x[0]['y'] }}",
	"${{ success() || failure() || always() || cancelled() }}",
	"${{ a",
	"${{ 'a }}",
}

// fuzzContext returns a context whose hashFiles reads a small directory.
func fuzzContext(tb testing.TB) *Context {
	dir := tb.TempDir()
	for _, name := range []string{"Cargo.lock", "src/main.rs", "x/y.rs"} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	ctx := testContext()
	ctx.Dir = dir
	return ctx
}

func FuzzParseTemplate(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	ctx := fuzzContext(f)
	f.Fuzz(func(t *testing.T, s string) {
		tpl, err := ParseTemplate(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(s) {
				t.Fatalf("ParseTemplate(%q) error = %#v, want a *SyntaxError within the input", s, err)
			}
			if _, err2 := Interpolate(s, ctx); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("Interpolate(%q) error = %v, ParseTemplate's = %v", s, err2, err)
			}
			return
		}
		out, err := tpl.Eval(ctx)
		out2, err2 := Interpolate(s, ctx)
		if out != out2 || (err == nil) != (err2 == nil) {
			t.Fatalf("Eval(%q) = %q, %v but Interpolate = %q, %v", s, out, err, out2, err2)
		}
		_, _ = tpl.Partial(ctx, "matrix")
		for _, e := range tpl.Exprs() {
			if _, err := Parse(e.String()); err != nil {
				t.Fatalf("expression %q of %q does not parse alone: %v", e.String(), s, err)
			}
			checkRefOffsets(t, s, e)
		}
	})
}

// checkRefOffsets checks that each ref of e, an expression of src, starts
// at the name it says.
func checkRefOffsets(t *testing.T, src string, e *Expr) {
	t.Helper()
	for _, r := range e.Refs() {
		if !strings.HasPrefix(src[r.Offset:], r.Path[0]) {
			t.Fatalf("ref %q of %q at offset %d, where %q is", r.Path, src, r.Offset, src[r.Offset:])
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	ctx := fuzzContext(f)
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(s) {
				t.Fatalf("Parse(%q) error = %#v, want a *SyntaxError within the input", s, err)
			}
			return
		}
		if e.String() != s {
			t.Fatalf("String() = %q, want %q", e.String(), s)
		}
		v, err := e.Eval(ctx)
		if err == nil {
			_ = String(v)
			_ = Truthy(v)
		}
		checkRefOffsets(t, s, e)
		_, _ = Condition(s, ctx)
	})
}

// A typical step script with two expressions.
const benchScript = `set -euo pipefail
cargo build --release --target ${{ matrix.target }}
VERSION=${{ steps.generate-version.outputs.version }}
tar czf "dist/app-$VERSION.tar.gz" -C target/release app
echo "artifact=dist/app-$VERSION.tar.gz" >> "$OXIDE_OUTPUT"
`

func benchContext() *Context {
	ctx := testContext()
	ctx.Values["matrix"].(map[string]any)["target"] = "x86_64-unknown-linux-gnu"
	return ctx
}

func BenchmarkInterpolate(b *testing.B) {
	ctx := benchContext()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Interpolate(benchScript, ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInterpolateCondition(b *testing.B) {
	// Expressions that are not plain paths take the parser.
	const s = "${{ matrix.target == 'x' || steps.generate-version.outputs.version }} ${{ format('{0}', sha) }}"
	ctx := benchContext()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Interpolate(s, ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInterpolateNoExpr(b *testing.B) {
	const s = "cargo test --all-features --workspace\ncargo clippy -- -D warnings\n"
	ctx := benchContext()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Interpolate(s, ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTemplateEval(b *testing.B) {
	tpl, err := ParseTemplate(benchScript)
	if err != nil {
		b.Fatal(err)
	}
	ctx := benchContext()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tpl.Eval(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
