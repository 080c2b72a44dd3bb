package pipeline

import (
	"os"

	"github.com/goccy/go-yaml/parser"
)

// Parse reads a pipeline definition; file names it in messages. On any
// problem it returns a nil *Pipeline and an ErrorList with every problem
// found, sorted by position.
func Parse(file string, data []byte) (*Pipeline, error) {
	if err := prescan(file, data, maxDepth); err != nil {
		return nil, ErrorList{err}
	}
	d := newDecoder(file)
	p := d.parse(data)
	if len(d.errs) > 0 {
		return nil, d.errs.sorted()
	}
	p.Warnings = sortWarnings(d.warns)
	return p, nil
}

// Load reads and parses the pipeline definition at path.
func Load(path string) (*Pipeline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

func (d *decoder) parse(data []byte) *Pipeline {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		d.syntaxError(err)
		return nil
	}
	if len(f.Docs) == 0 || isNull(f.Docs[0].Body) {
		d.errorf(Pos{Line: 1, Col: 1}, "the pipeline definition is empty")
		return nil
	}
	for _, doc := range f.Docs[1:] {
		if !isNull(doc.Body) {
			d.errorf(pos(doc.Body), "a pipeline file holds one YAML document")
			break
		}
	}
	root := f.Docs[0].Body
	if d.scan(root) > maxNodes {
		d.errorf(pos(root), "the document is too large once its aliases are expanded")
		return nil
	}
	p := d.pipeline(d.resolve(root))
	if p != nil {
		d.validate(p)
	}
	return p
}
