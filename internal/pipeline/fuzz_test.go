package pipeline

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, file := range exampleFiles(f) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &x [1]\nb: *x\nc: {<<: *x}\n"))
	f.Add([]byte("version: 1\nname: n\nstages:\n- name: a\n  steps: [{name: s, run: '${{ matrix.x'}]\n"))
	// Depth bombs, flow and block, and brackets the prescan must not count.
	f.Add([]byte(strings.Repeat("[", 100_000)))
	f.Add([]byte("a: " + strings.Repeat("{a: ", 20_000)))
	f.Add([]byte(strings.Repeat("- ", 1000) + "x"))
	f.Add([]byte(blockDeep(100)))
	f.Add([]byte(seqDeep(100)))
	f.Add([]byte("a: '" + strings.Repeat("[", 100) + "'\nb: |\n  " + strings.Repeat("{", 100) + "\nc: x # [[[\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if (p == nil) == (err == nil) {
			t.Fatalf("Parse returned %v and %v", p, err)
		}
		var list ErrorList
		if err != nil && (!errors.As(err, &list) || len(list) == 0) {
			t.Fatalf("error is not a non-empty ErrorList: %v", err)
		}
	})
}
