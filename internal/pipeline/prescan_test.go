package pipeline

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/goccy/go-yaml/parser"
)

// blockDeep nests n block mappings, one indentation level each.
func blockDeep(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(strings.Repeat(" ", i) + "a:\n")
	}
	return b.String()
}

// seqDeep nests n block sequences, one indentation level each.
func seqDeep(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(strings.Repeat("  ", i) + "-\n")
	}
	return b.String()
}

func TestParseRefusesDeepNestingCheaply(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"flow 100,000 deep", strings.Repeat("[", 100_000), "bomb.yaml:1:64: nesting deeper than 64"},
		{"flow 20,000 deep", "version: 1\nname: x\nstages: " + strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000), "bomb.yaml:3:72: nesting deeper than 64"},
		{"mappings in flow", "a: " + strings.Repeat("{a: ", 100_000), "bomb.yaml:1:"},
		{"block sequences on one line", strings.Repeat("- ", 100_000) + "x", "bomb.yaml:1:"},
		{"block mappings by indentation", blockDeep(100), "bomb.yaml:65:65: nesting deeper than 64"},
		{"block sequences by indentation", seqDeep(100), "bomb.yaml:64:127: nesting deeper than 64"},
		{"too many nodes", "a: [" + strings.Repeat("1,", 100_001) + "]", "bomb.yaml:1:"},
		{"too large", "a: '" + strings.Repeat("x", maxSize) + "'", "bomb.yaml:1:1: the pipeline definition is larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.data)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Parse("bomb.yaml", data)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Parse: %v, want %q...", err, tt.want)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Errorf("Parse allocated %d bytes, want at most 1 MiB", alloc)
			}
		})
	}
}

// TestPrescanCountsOnlyStructure: brackets, dashes and quotes inside
// scalars and comments open nothing.
func TestPrescanCountsOnlyStructure(t *testing.T) {
	deep := strings.Repeat("[", 200)
	for _, data := range []string{
		"a: '" + deep + "'",
		"a: \"" + deep + "\\\" " + deep + "\"",
		"a: 'it''s " + deep + "'",
		"a: b # " + deep,
		"# " + deep,
		"a: echo it's " + deep,
		"a: echo x " + deep + "\n  and " + deep + "\nb: 1",
		"a: |\n  " + deep + "\n  \n   " + deep + "\nb: >-\n  " + deep,
		"- run: |\n    " + deep + "\n  name: x",
		"a: [\"" + deep + "\", '" + deep + "' , b " + deep[:1] + "]",
		"a: [x, # " + deep + "\n  y]",
		"a: 'multi\n  line " + deep + "'\nb: \"also\n " + deep + "\"",
		"a: &x [1]\nb: *x\nc: !!str x " + deep,
		"-\n---\na: 1\n",
		"--- a: b\n--- c\n--- - d: |\n  " + deep + "\n",
		"--- " + deep[:3] + "1, 2" + strings.Repeat("]", 3) + "\n...\n",
	} {
		if err := prescan("ok.yaml", []byte(data), maxDepth); err != nil {
			t.Errorf("prescan(%q): %v", data, err)
		}
	}
}

// TestPrescanBlockScalarEnds: the lines after a block scalar are counted.
func TestPrescanBlockScalarEnds(t *testing.T) {
	for _, data := range []string{
		"- run: |\n    x\n  a: " + strings.Repeat("[", 70),
		"- a: |\n  b: " + strings.Repeat("[", 70),
		"a: x\nb: " + strings.Repeat("[", 70),
		strings.Repeat("a: !t\n", 70),
		strings.Repeat("a: !t &x\n", 70),
		"a: " + strings.Repeat("b: ", 70),
		strings.Repeat("-\na:\n", 40),
	} {
		if err := prescan("bomb.yaml", []byte(data), maxDepth); err == nil {
			t.Errorf("prescan(%q) accepted it", data)
		}
	}
}

// TestPrescanAcceptsExamples: no pipeline of either corpus is refused.
func TestPrescanAcceptsExamples(t *testing.T) {
	local, _ := filepath.Glob("../../examples/*.yaml")
	for _, file := range append(exampleFiles(t), local...) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := prescan(file, data, maxDepth); err != nil {
			t.Error(err)
		}
	}
}

// TestPrescanNeverUndercounts: on inputs where the parser's reading of YAML
// is odd, the prescan counts at least the nesting that the parser builds.
func TestPrescanNeverUndercounts(t *testing.T) {
	d := strings.Repeat("- ", 10) + "x"
	fl := strings.Repeat("[", 10) + strings.Repeat("]", 10)
	for _, s := range []string{
		"- value\n   " + d, "a: value\n   " + d, "a: value\n   " + fl, "a: value\n  b: " + fl,
		"a: 'x'\n  " + d, "a: \"x\" " + fl, "a: |\n" + d, "a: |-\n " + fl, "- |\n " + fl, "-\n  |\n " + fl,
		"a: &x\n  " + d, "a: !!map\n  " + d, "? " + fl + "\n: " + fl, "a:\n" + d, "a: #c\n  " + fl,
		"a: b\n\t" + fl, "a:\t" + fl, "a: x\n#" + fl + "\n  " + fl, "'a':" + fl, "\"a\":" + fl, "a:" + fl, "{a: " + fl + "}",
		"a: x #\n  " + fl, "--- " + fl, "--- |\n" + fl, "a: >\n\n  " + fl + "\nb: 1",
		strings.ReplaceAll(blockDeep(10), "\n", "\r\n"), strings.ReplaceAll(seqDeep(10), "\n", "\r\n"),
		"-\t-\t-\t-\tx", "a: |\r\n  x\r\nb: " + fl, "a: [\n[\n[\n[]]]]", "a: [x, # ]]]\n [[]]]", `a: "x\"" ` + fl, "a: 'x''' " + fl,
		"- a\n  - b", "- a:\n  - b:\n    - c:\n      - d", "a:\n- b:\n  - c:\n    - d: 1", "- - - a: - b", "? - - a\n: - - b", "a: !t\n- !t\n- !t\n- x",
		"- !t\n- !t\n- !t\n- x", "-\n-\na:\n-\nb:\n-\nc:", "a: &x\n  &y\n  - - x", "a: !t &x\nb: !t\nc: 1", "a: &x !t\nb: &y !t\nc: 1",
		"a:\n  -\n  b:\n  -\n  c:\n  -\n  d:", "- a: !t\n  b: !t\n  c: !t\n  d: 1", "a: b\n  c: d", "- a\n - b\n  - c",
		"a:\n  - b\n  -\n  - c:\n    -\n    d:", "a:    !t\nb:    !t\nc: x", "!t\n!t\n- x", "a: !t #c\nb: !t #c\nc: 1",
		"|\n x\n: a:", "a: b: c:", ": a: b:",
	} {
		f, err := parser.ParseBytes([]byte(s), 0)
		if err != nil {
			continue
		}
		for _, doc := range f.Docs {
			if n := depth(doc.Body); n > 1 && prescan("x.yaml", []byte(s), n-1) == nil {
				t.Errorf("%q: the parser nests %d deep, the prescan accepts it at %d", s, n, n-1)
			}
		}
	}
}

// BenchmarkParseWorstCase parses definitions of up to 1 MiB that reach the
// bounds: those refused cost the prescan only, the others the parser too.
func BenchmarkParseWorstCase(b *testing.B) {
	for _, bb := range []struct{ name, data string }{
		{"flow-deep", strings.Repeat("[", maxSize)},
		{"block-deep", blockDeep(1440)},
		{"flat-nodes", "a: [" + strings.Repeat("1,", maxSize/2-3) + "]"},
		{"quoted", "a: '" + strings.Repeat("[", maxSize-5) + "'"},
		{"just-under-depth", strings.Repeat("- ", 60) + "[" + strings.Repeat("1,", maxSize/2-64) + "]"},
		{"most-nodes-flat", "a: [" + strings.Repeat("1,", maxNodes-10) + "]"},
		{"most-nodes-deep", "a: [" + strings.Repeat(strings.Repeat("[", 60)+strings.Repeat("]", 60)+",", maxNodes/61) + "]"},
		{"most-nodes-block", strings.Repeat("- a: 1\n  b: [x, y]\n", maxNodes/8)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			data := []byte(bb.data)
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Parse("bench.yaml", data)
			}
		})
	}
}
