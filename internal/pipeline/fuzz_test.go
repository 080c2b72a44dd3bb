package pipeline

import (
	"errors"
	"os"
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
