package pipeline

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
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
	// Depth bombs, flow and block (FuzzParse's unit test has the 100,000
	// deep ones), and brackets the prescan must not count.
	f.Add([]byte(strings.Repeat("[", 1000)))
	f.Add([]byte("a: " + strings.Repeat("{a: ", 1000)))
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
		// The prescan never counts less nesting than the parser finds.
		if f, err := parser.ParseBytes(data, 0); err == nil {
			for _, doc := range f.Docs {
				if d := depth(doc.Body); d > 1 && prescan("fuzz.yaml", data, d-1) == nil {
					t.Fatalf("the parser nests %d deep, the prescan accepts it at %d", d, d-1)
				}
			}
		}
	})
}

// depth returns how deeply n nests mappings and lists.
func depth(n ast.Node) int {
	var children []ast.Node
	self := 0
	switch n := n.(type) {
	case *ast.MappingNode:
		self = 1
		for _, v := range n.Values {
			children = append(children, v.Key, v.Value)
		}
	case *ast.MappingValueNode:
		self = 1
		children = append(children, n.Key, n.Value)
	case *ast.SequenceNode:
		self = 1
		children = n.Values
	case *ast.TagNode:
		children = append(children, n.Value)
	case *ast.AnchorNode:
		children = append(children, n.Value)
	case *ast.MappingKeyNode:
		children = append(children, n.Value)
	}
	most := 0
	for _, c := range children {
		most = max(most, depth(c))
	}
	return self + most
}
