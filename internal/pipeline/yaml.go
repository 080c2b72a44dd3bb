package pipeline

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// maxNodes bounds the size of a document with its aliases expanded, so that
// a few lines of nested aliases cannot expand into gigabytes.
const maxNodes = 100_000

// A decoder walks the YAML syntax tree of one file and collects every
// problem it finds, each with the position of the offending key or value.
type decoder struct {
	file    string
	errs    ErrorList
	warns   []Warning
	anchors map[string]ast.Node         // while scanning: the last node of each anchor name
	sizes   map[ast.Node]int            // expanded size of each anchored node
	aliases map[*ast.AliasNode]ast.Node // the node each alias stands for
	pending []text                      // strings that may hold ${{ }} expressions
	stage   *Stage                      // the stage being decoded, for texts
}

func newDecoder(file string) *decoder {
	return &decoder{
		file:    file,
		anchors: make(map[string]ast.Node),
		sizes:   make(map[ast.Node]int),
		aliases: make(map[*ast.AliasNode]ast.Node),
	}
}

func (d *decoder) errorf(p Pos, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Pos: p, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) warnf(p Pos, format string, args ...any) {
	d.warns = append(d.warns, Warning{File: d.file, Pos: p, Msg: fmt.Sprintf(format, args...)})
}

// syntaxError reports an error of the YAML parser at the position it gives.
func (d *decoder) syntaxError(err error) {
	p, msg := Pos{Line: 1, Col: 1}, err.Error()
	var ye interface {
		GetToken() *token.Token
		GetMessage() string
	}
	if errors.As(err, &ye) {
		msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			p = Pos{Line: tk.Position.Line, Col: tk.Position.Column}
		}
	}
	d.errorf(p, "invalid YAML: %s", msg)
}

// scan records the node each alias stands for, reports undefined aliases
// and returns the number of nodes in n with aliases expanded, capped just
// above maxNodes. An alias names an anchor completed before it, so aliases
// cannot form cycles.
func (d *decoder) scan(n ast.Node) int {
	size := 1
	switch n := n.(type) {
	case *ast.MappingNode:
		for _, v := range n.Values {
			size += d.scan(v)
		}
	case *ast.MappingValueNode:
		size += d.scan(n.Key) + d.scan(n.Value)
	case *ast.MappingKeyNode:
		size += d.scan(n.Value)
	case *ast.SequenceNode:
		for _, v := range n.Values {
			size += d.scan(v)
		}
	case *ast.TagNode:
		size += d.scan(n.Value)
	case *ast.AnchorNode:
		size += d.scan(n.Value)
		size = min(size, maxNodes+1)
		d.anchors[tokenValue(n.Name)] = n.Value
		d.sizes[n.Value] = size
	case *ast.AliasNode:
		name := tokenValue(n.Value)
		target, ok := d.anchors[name]
		if !ok {
			d.errorf(pos(n), "undefined alias *%s", name)
			return 1
		}
		d.aliases[n] = target
		return d.sizes[target]
	}
	return min(size, maxNodes+1)
}

func tokenValue(n ast.Node) string {
	if n == nil || n.GetToken() == nil {
		return ""
	}
	return n.GetToken().Value
}

// resolve looks through anchors, aliases and tags to the node that holds
// the value. A !!str tag makes a string of a number or boolean.
func (d *decoder) resolve(n ast.Node) ast.Node {
	for {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.AliasNode:
			n = d.aliases[v]
		case *ast.MappingKeyNode:
			n = v.Value
		case *ast.TagNode:
			switch v.Value.(type) {
			case *ast.BoolNode, *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
				if v.Start.Value == "!!str" {
					return ast.String(v.Value.GetToken())
				}
			}
			n = v.Value
		default:
			return n
		}
	}
}

func isNull(n ast.Node) bool {
	_, null := n.(*ast.NullNode)
	return n == nil || null
}

// pos returns where n starts: for a mapping, its first key.
func pos(n ast.Node) Pos {
	switch v := n.(type) {
	case *ast.MappingNode:
		if len(v.Values) > 0 {
			return pos(v.Values[0])
		}
	case *ast.MappingValueNode:
		return pos(v.Key)
	}
	if n == nil || n.GetToken() == nil || n.GetToken().Position == nil {
		return Pos{}
	}
	p := n.GetToken().Position
	return Pos{Line: p.Line, Col: p.Column}
}

// kind names the type of a value for messages.
func kind(n ast.Node) string {
	switch n.(type) {
	case nil, *ast.NullNode:
		return "null"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.BoolNode:
		return "a boolean"
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "a number"
	}
	return "a string"
}

// typeError reports that key's value n is not of the wanted kind.
func (d *decoder) typeError(n ast.Node, key, want string) {
	d.errorf(pos(n), "%s: expected %s, got %s", key, want, kind(n))
}

// A field is one entry of a mapping.
type field struct {
	key   string
	pos   Pos      // of the key
	value ast.Node // resolved
}

// fields returns the entries of mapping n in order, with merge keys (<<)
// expanded: keys written in the mapping win over merged ones. It reports
// an error and returns false when n is not a mapping.
func (d *decoder) fields(n ast.Node, key string) ([]field, bool) {
	var pairs []*ast.MappingValueNode
	switch m := n.(type) {
	case *ast.MappingNode:
		pairs = m.Values
	case *ast.MappingValueNode:
		pairs = []*ast.MappingValueNode{m}
	default:
		d.typeError(n, key, "a mapping")
		return nil, false
	}
	keys := make([]string, len(pairs))
	explicit := make(map[string]bool)
	for i, mv := range pairs {
		if !mv.Key.IsMergeKey() {
			keys[i] = d.keyName(mv.Key)
			explicit[keys[i]] = true
		}
	}
	var out []field
	seen := make(map[string]bool)
	for i, mv := range pairs {
		if !mv.Key.IsMergeKey() {
			out = append(out, field{key: keys[i], pos: pos(mv.Key), value: d.resolve(mv.Value)})
			seen[keys[i]] = true
			continue
		}
		for _, src := range d.mergeSources(mv.Value) {
			merged, _ := d.fields(src, "<<")
			for _, f := range merged {
				if !explicit[f.key] && !seen[f.key] {
					out = append(out, f)
					seen[f.key] = true
				}
			}
		}
	}
	return out, true
}

// mergeSources returns the mappings that a merge key's value names.
func (d *decoder) mergeSources(n ast.Node) []ast.Node {
	n = d.resolve(n)
	seq, ok := n.(*ast.SequenceNode)
	if !ok {
		return []ast.Node{n}
	}
	srcs := make([]ast.Node, len(seq.Values))
	for i, v := range seq.Values {
		srcs[i] = d.resolve(v)
	}
	return srcs
}

func (d *decoder) keyName(k ast.Node) string {
	n := d.resolve(k)
	if s, ok := scalarText(n); ok {
		return s
	}
	d.errorf(pos(n), "a key must be a string, got %s", kind(n))
	return ""
}

// scalarText returns the text of a scalar: a string's value, or how a
// number or boolean is written.
func scalarText(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		if v.Value == nil {
			return "", true
		}
		return v.Value.Value, true
	case *ast.BoolNode, *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return tokenValue(v), true
	}
	return "", false
}

// scalar returns a scalar as a string, int, float64 or bool.
func scalar(n ast.Node) (any, bool) {
	switch v := n.(type) {
	case *ast.BoolNode:
		return v.Value, true
	case *ast.IntegerNode:
		switch i := v.Value.(type) {
		case int64:
			return int(i), true
		case uint64:
			if i <= math.MaxInt {
				return int(i), true
			}
			return float64(i), true
		}
	case *ast.FloatNode:
		return v.Value, true
	case *ast.InfinityNode:
		return v.Value, true
	case *ast.NanNode:
		return math.NaN(), true
	}
	return scalarText(n)
}

// value decodes any value into nil, a scalar, []any or map[string]any,
// recording its strings as texts.
func (d *decoder) value(n ast.Node) any {
	switch v := n.(type) {
	case nil, *ast.NullNode:
		return nil
	case *ast.SequenceNode:
		list := make([]any, len(v.Values))
		for i, e := range v.Values {
			list[i] = d.value(d.resolve(e))
		}
		return list
	case *ast.MappingNode, *ast.MappingValueNode:
		fs, _ := d.fields(v, "")
		m := make(map[string]any, len(fs))
		for _, f := range fs {
			m[f.key] = d.value(f.value)
		}
		return m
	}
	x, _ := scalar(n)
	if s, ok := x.(string); ok {
		d.addText(n, s, false)
	}
	return x
}

// An object is a mapping whose keys are checked against a schema.
type object struct {
	d      *decoder
	what   string // "stage", for messages
	pos    Pos
	fields map[string]field
}

// object decodes mapping n, reporting keys not in keys; keys starting with
// "x-" are extensions and ignored. It returns nil when n is not a mapping.
func (d *decoder) object(n ast.Node, key, what string, keys []string) *object {
	fs, ok := d.fields(n, key)
	if !ok {
		return nil
	}
	return d.objectOf(fs, pos(n), what, keys)
}

// objectOf makes an object of the fields of a mapping at p.
func (d *decoder) objectOf(fs []field, p Pos, what string, keys []string) *object {
	o := &object{d: d, what: what, pos: p, fields: make(map[string]field, len(fs))}
	for _, f := range fs {
		if strings.HasPrefix(f.key, "x-") {
			continue // an extension, e.g. a place for anchors
		}
		if !slices.Contains(keys, f.key) {
			d.errorf(f.pos, "unknown key %q in %s%s", f.key, what, didYouMean(f.key, keys))
			continue
		}
		if msg, ok := unsupportedKeys[what][f.key]; ok && !isNull(f.value) {
			d.warnf(f.pos, "%s", msg)
		}
		o.fields[f.key] = f
	}
	return o
}

// get returns the value of key; false when it is absent or null.
func (o *object) get(key string) (ast.Node, bool) {
	f, ok := o.fields[key]
	if !ok || isNull(f.value) {
		return nil, false
	}
	return f.value, true
}

// pick returns the field of key or of its alias, reporting both given.
// Its value may be null.
func (o *object) pick(key, alias string) (field, bool) {
	f, ok := o.fields[key]
	a, aok := o.fields[alias]
	if ok && aok {
		o.d.errorf(a.pos, "%q is an alias of %q; give only one of them", alias, key)
	}
	if !ok {
		return a, aok
	}
	return f, true
}

// required returns the value of key, reporting it missing or null.
func (o *object) required(key string) (ast.Node, bool) {
	f, ok := o.fields[key]
	switch {
	case !ok:
		o.d.errorf(o.pos, "missing required key %q in %s", key, o.what)
	case isNull(f.value):
		o.d.errorf(f.pos, "%s must not be empty", key)
	}
	return o.get(key)
}

// str returns the string value of key, "" when absent.
func (o *object) str(key string) string {
	n, ok := o.get(key)
	if !ok {
		return ""
	}
	return o.d.str(n, key)
}

// text is str for values that may hold ${{ }} expressions.
func (o *object) text(key string) string {
	n, ok := o.get(key)
	if !ok {
		return ""
	}
	return o.d.text(n, key)
}

// texts returns the list of strings of key.
func (o *object) texts(key string) []string {
	n, ok := o.get(key)
	if !ok {
		return nil
	}
	return o.d.texts(n, key)
}

// enum returns the value of key, which must be one of values.
func (o *object) enum(key string, values ...string) string {
	n, ok := o.get(key)
	if !ok {
		return ""
	}
	return o.d.enum(n, key, values)
}

func (o *object) boolean(key string, def bool) bool {
	n, ok := o.get(key)
	if !ok {
		return def
	}
	return o.d.boolean(n, key, def)
}

// integer returns the value of key, which must lie in [lo, hi].
func (o *object) integer(key string, def, lo, hi int) int {
	n, ok := o.get(key)
	if !ok {
		return def
	}
	return o.d.integer(n, key, def, lo, hi)
}

// list returns the resolved items of list n.
func (d *decoder) list(n ast.Node, key string) []ast.Node {
	seq, ok := n.(*ast.SequenceNode)
	if !ok {
		d.typeError(n, key, "a list")
		return nil
	}
	items := make([]ast.Node, len(seq.Values))
	for i, v := range seq.Values {
		items[i] = d.resolve(v)
	}
	return items
}

func (d *decoder) boolean(n ast.Node, key string, def bool) bool {
	b, ok := n.(*ast.BoolNode)
	if !ok {
		d.typeError(n, key, "a boolean")
		return def
	}
	return b.Value
}

func (d *decoder) str(n ast.Node, key string) string {
	s, ok := scalarText(n)
	if !ok {
		d.typeError(n, key, "a string")
	}
	return s
}

func (d *decoder) text(n ast.Node, key string) string {
	s := d.str(n, key)
	d.addText(n, s, false)
	return s
}

// texts decodes a list of strings that may hold expressions.
func (d *decoder) texts(n ast.Node, key string) []string {
	var list []string
	for _, e := range d.list(n, key) {
		list = append(list, d.text(e, key))
	}
	return list
}

func (d *decoder) enum(n ast.Node, key string, values []string) string {
	s := d.str(n, key)
	if !slices.Contains(values, s) {
		d.errorf(pos(n), "invalid %s %q; want one of %s%s", key, s, strings.Join(values, ", "), didYouMean(s, values))
	}
	return s
}

func (d *decoder) integer(n ast.Node, key string, def, lo, hi int) int {
	x, _ := scalar(n)
	i, ok := x.(int)
	switch {
	case !ok:
		d.typeError(n, key, "an integer")
		return def
	case i < lo || i > hi:
		if hi == math.MaxInt {
			d.errorf(pos(n), "%s must be at least %d, got %d", key, lo, i)
		} else {
			d.errorf(pos(n), "%s must be between %d and %d, got %d", key, lo, hi, i)
		}
		return def
	}
	return i
}
