package expr

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestFunctions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src  string
		want any
	}{
		{"startsWith(ref, 'refs/tags/v')", true},
		{"startsWith(ref, 'refs/heads/')", false},
		{"startsWith('ABC', 'ab')", true},
		{"startsWith('a', 'abc')", false},
		{"startsWith(1.5, '1.')", true},
		{"startsWith(null, '')", true},
		{"endsWith('file.TXT', '.txt')", true},
		{"endsWith('file.txt', '.md')", false},
		{"endsWith('t', 'txt')", false},
		{"contains('Hello', 'ELL')", true},
		{"contains('Hello', 'x')", false},
		{"contains(tags, 'y')", true},
		{"contains(tags, 'z')", false},
		{"contains(matrix.list, 'b')", true},
		{"contains(fromJSON('[1, 2]'), '2')", true},
		{"contains(fromJSON('[1, 2]'), 3)", false},
		{"contains(null, '')", true},
		{"contains(true, 'RU')", true},
		{"format('{0}-{1}', 'a', 1)", "a-1"},
		{"format('{{x}} {0}', true)", "{x} true"},
		{"format('{0}{0}{1}', 'a', null)", "aa"},
		{"format('plain')", "plain"},
		{"format('{0}', matrix.list)", `["a","b"]`},
		{"format(matrix.os, 1)", "linux"},
		{"join(tags)", "x,Y"},
		{"join(tags, ' ')", "x Y"},
		{"join(matrix.list, '-')", "a-b"},
		{"join('abc', '-')", "abc"},
		{"join(fromJSON('[1, true, null, \"s\"]'))", "1,true,,s"},
		{"join(fromJSON('[]'), ',')", ""},
		{"toJSON(matrix.list)", "[\n  \"a\",\n  \"b\"\n]"},
		{"toJSON('a<b')", `"a<b"`},
		{"toJSON(null)", "null"},
		{"toJSON(3)", "3"},
		{"toJSON(secrets)", "{\n  \"GHCR_TOKEN\": \"tok\"\n}"},
		{"fromJSON('{\"a\": [1, 2]}').a[1]", 2.0},
		{"fromJSON('true')", true},
		{"fromJSON(' \"s\" ')", "s"},
		{"fromJSON('null')", nil},
		{"fromJSON(toJSON(matrix.list))[0]", "a"},
		{"fromJSON('[\"a\"]')", []any{"a"}},
		{"STARTSWITH('ab', 'A')", true},
		{"ToJson(1)", "1"},
	}
	ctx := testContext()
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

func TestStatusFunctions(t *testing.T) {
	t.Parallel()
	want := map[Status][4]bool{ // success, failure, always, cancelled
		StatusSuccess:   {true, false, true, false},
		StatusFailure:   {false, true, true, false},
		StatusCancelled: {false, false, true, true},
	}
	for status, w := range want {
		for i, fn := range []string{"success()", "failure()", "always()", "cancelled()"} {
			e, err := Parse(fn)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Eval(&Context{Status: status})
			if err != nil || got != w[i] {
				t.Errorf("status %d: %s = %v, %v; want %v", status, fn, got, err, w[i])
			}
		}
	}
}

// writeFiles creates files (slash paths → contents) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// wantHash is hashFiles' result computed independently: the SHA-256 of the
// SHA-256 sums of the named files' contents, in the given (sorted) order.
func wantHash(t *testing.T, dir string, names ...string) string {
	t.Helper()
	all := sha256.New()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(n)))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		all.Write(sum[:])
	}
	return hex.EncodeToString(all.Sum(nil))
}

func TestHashFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Cargo.lock":                          "lock",
		"README.md":                           "readme",
		"package-lock.json":                   "root",
		"node_modules/pkg/package-lock.json":  "nested",
		"src/main.rs":                         "fn main() {}",
		"src/lib.rs":                          "pub fn f() {}",
		"src/sub/x.rs":                        "x",
		"src/sub/deeper/y.rs":                 "y",
		"empty/.keep":                         "",
		"weird name/[brackets].txt":           "w",
		"src/sub/deeper/not-rust.rs.orig":     "o",
		"services/api/requirements.txt":       "r",
		"services/api/requirements-extra.txt": "e",
	})
	if err := os.Symlink("Cargo.lock", filepath.Join(dir, "link.lock")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("src", filepath.Join(dir, "srclink")); err != nil {
		t.Fatal(err)
	}
	rs := []string{"src/lib.rs", "src/main.rs", "src/sub/deeper/y.rs", "src/sub/x.rs"}
	tests := []struct {
		src  string
		want []string // matching files, sorted; nil: ""
	}{
		{"hashFiles('Cargo.lock')", []string{"Cargo.lock"}},
		{"hashFiles('./Cargo.lock')", []string{"Cargo.lock"}},
		{"hashFiles('nomatch')", nil},
		{"hashFiles('nodir/*.x')", nil},
		{"hashFiles('src')", nil}, // a directory is not a file
		{"hashFiles('**/*.rs')", rs},
		{"hashFiles('src/**/*.rs')", rs},
		{"hashFiles('src/**/**/*.rs')", rs},
		{"hashFiles('src/*.rs')", []string{"src/lib.rs", "src/main.rs"}},
		{"hashFiles('src/main.rs', 'src/lib.rs')", []string{"src/lib.rs", "src/main.rs"}},
		{"hashFiles('src/*.rs', 'src/main.rs')", []string{"src/lib.rs", "src/main.rs"}},
		{"hashFiles('src/**')", []string{"src/lib.rs", "src/main.rs", "src/sub/deeper/not-rust.rs.orig", "src/sub/deeper/y.rs", "src/sub/x.rs"}},
		{"hashFiles('**/package-lock.json')", []string{"node_modules/pkg/package-lock.json", "package-lock.json"}},
		{"hashFiles('**/package-lock.json', '!node_modules/**')", []string{"package-lock.json"}},
		{"hashFiles('**/*.rs', '!**/sub/**')", []string{"src/lib.rs", "src/main.rs"}},
		{"hashFiles('**/requirements*.txt')", []string{"services/api/requirements-extra.txt", "services/api/requirements.txt"}},
		{"hashFiles('services/?pi/requirements.txt')", []string{"services/api/requirements.txt"}},
		{"hashFiles('weird name/\\[brackets].txt')", []string{"weird name/[brackets].txt"}},
		{"hashFiles('*.lock')", []string{"Cargo.lock", "link.lock"}},
		{"hashFiles('empty/*')", []string{"empty/.keep"}},
	}
	ctx := &Context{Dir: dir}
	for _, tt := range tests {
		e, err := Parse(tt.src)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.src, err)
		}
		got, err := e.Eval(ctx)
		if err != nil {
			t.Errorf("Eval(%q): %v", tt.src, err)
			continue
		}
		want := ""
		if tt.want != nil {
			want = wantHash(t, dir, tt.want...)
		}
		if got != want {
			t.Errorf("Eval(%q) = %q, want the hash of %q", tt.src, got, tt.want)
		}
	}

	// The hash follows the contents.
	e, _ := Parse("hashFiles('**/*.rs')")
	before, _ := e.Eval(ctx)
	writeFiles(t, dir, map[string]string{"src/main.rs": "fn main() { changed() }"})
	after, _ := e.Eval(ctx)
	if before == after || after != wantHash(t, dir, rs...) {
		t.Errorf("hash after a change = %v, before %v", after, before)
	}
}

func TestHashFilesErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct{ src, msg string }{
		{"hashFiles('../x')", "leaves the workspace"},
		{"hashFiles('a/../../x')", "leaves the workspace"},
		{"hashFiles('/etc/passwd')", "not relative"},
		{"hashFiles('[')", "syntax error in pattern"},
	} {
		e, err := Parse(tt.src)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.src, err)
		}
		_, err = e.Eval(&Context{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Eval(%q) error = %v, want …%s…", tt.src, err, tt.msg)
		}
	}
}
