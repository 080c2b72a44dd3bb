package jobspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// ParamType is the type of a template parameter.
type ParamType string

// Parameter types. An enum takes one of its parameter's Values.
const (
	ParamString ParamType = "string"
	ParamInt    ParamType = "int"
	ParamBool   ParamType = "bool"
	ParamEnum   ParamType = "enum"
)

// Parameter is a typed parameter of a template.
type Parameter struct {
	Name        string    `json:"name"` // an identifier: the placeholder is {{ .name }}
	Type        ParamType `json:"type"`
	Description string    `json:"description,omitempty"`
	Required    bool      `json:"required,omitempty"`
	// Default is the value of an optional parameter that is not given;
	// without one it is the type's zero value ("", 0, false, or the
	// empty string for an enum).
	Default any `json:"default,omitempty"`
	// Values are an enum's choices: strings, numbers or booleans.
	Values []any `json:"values,omitempty"`
}

// Template is a Spec with "{{ .param }}" placeholders (text/template) in its
// strings, and the parameters that fill them. A string that is exactly one
// placeholder of an int, bool or non-string enum parameter becomes that
// typed value, so that numeric fields can be parameters too:
// "priority": "{{ .prio }}" gives "priority": 5.
type Template struct {
	Parameters []Parameter     `json:"parameters"`
	Spec       json.RawMessage `json:"spec"`
}

var (
	paramName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// wholePlaceholder matches a string that is one {{ .name }}.
	wholePlaceholder = regexp.MustCompile(`^\{\{-?\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}$`)
)

// Validate checks the template as far as is possible without parameter
// values: the parameters' names, types, enum values and defaults; that every
// placeholder parses and names a declared parameter; and that the spec,
// filled with defaults (or zero values), has the shape of a Spec. A spec
// without placeholders is validated fully; one with placeholders is
// validated fully when instantiated.
func (t *Template) Validate() error {
	var p problems
	validateParameters(t.Parameters, &p)
	if len(p) > 0 {
		return p.err()
	}
	data := make(map[string]any, len(t.Parameters))
	for _, prm := range t.Parameters {
		data[prm.Name] = sample(prm)
	}
	s, placeholders, err := t.fill(data)
	if err != nil {
		return err
	}
	if !placeholders {
		return s.Validate()
	}
	return nil
}

// Instantiate fills the template with values, keyed by parameter name, and
// returns the validated Spec. Numbers may be json.Number (decode the values
// with UseNumber), float64 or Go integers. Unknown, missing required and
// wrongly typed parameters are reported together as a *ValidationError
// naming them, as is an invalid resulting spec.
func (t *Template) Instantiate(values map[string]any) (Spec, error) {
	var p problems
	validateParameters(t.Parameters, &p)
	if len(p) > 0 {
		return Spec{}, fmt.Errorf("template: %w", p.err())
	}
	for _, name := range slices.Sorted(maps.Keys(values)) {
		if !slices.ContainsFunc(t.Parameters, func(prm Parameter) bool { return prm.Name == name }) {
			p.addf("parameter %q: unknown", name)
		}
	}
	data := make(map[string]any, len(t.Parameters))
	for _, prm := range t.Parameters {
		v, ok := values[prm.Name]
		if !ok || v == nil {
			if prm.Required {
				p.addf("parameter %q: required", prm.Name)
			}
			data[prm.Name] = sample(prm)
			continue
		}
		c, err := coerce(prm, v)
		if err != nil {
			p.addf("parameter %q: %v", prm.Name, err)
			continue
		}
		data[prm.Name] = c
	}
	if len(p) > 0 {
		return Spec{}, p.err()
	}
	s, _, err := t.fill(data)
	if err != nil {
		return Spec{}, err
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// fill substitutes data into the spec's strings and decodes the result. It
// reports whether the spec holds any placeholder.
func (t *Template) fill(data map[string]any) (Spec, bool, error) {
	dec := json.NewDecoder(bytes.NewReader(t.Spec))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return Spec{}, false, &ValidationError{Problems: []string{describeJSONError(err)}}
	}
	if _, ok := tree.(map[string]any); !ok {
		return Spec{}, false, &ValidationError{Problems: []string{"spec: must be a JSON object"}}
	}
	f := filler{data: data}
	tree = f.walk("", tree)
	if err := f.p.err(); err != nil {
		return Spec{}, f.placeholders, err
	}
	b, err := json.Marshal(tree)
	if err != nil {
		return Spec{}, f.placeholders, err
	}
	s, err := Decode(b)
	return s, f.placeholders, err
}

// filler substitutes placeholders throughout a decoded JSON tree.
type filler struct {
	data         map[string]any
	p            problems
	placeholders bool
}

func (f *filler) walk(path string, v any) any {
	switch v := v.(type) {
	case string:
		return f.str(path, v, true)
	case []any:
		for i := range v {
			v[i] = f.walk(fmt.Sprintf("%s[%d]", path, i), v[i])
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			nk, _ := f.str(sub+" (key)", k, false).(string)
			out[nk] = f.walk(sub, v[k])
		}
		return out
	}
	return v
}

// str fills one string. With typed, a string that is one placeholder of a
// non-string value becomes that value.
func (f *filler) str(path, s string, typed bool) any {
	if !strings.Contains(s, "{{") {
		return s
	}
	f.placeholders = true
	if path == "" {
		path = "spec"
	}
	if m := wholePlaceholder.FindStringSubmatch(s); typed && m != nil {
		if v, ok := f.data[m[1]]; ok {
			if _, isString := v.(string); !isString {
				return v
			}
		}
	}
	tmpl, err := template.New(path).Option("missingkey=error").Parse(s)
	if err != nil {
		f.p.addf("%s: %s", path, templateError(err))
		return s
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, f.data); err != nil {
		f.p.addf("%s: %s", path, templateError(err))
		return s
	}
	return b.String()
}

var missingKey = regexp.MustCompile(`map has no entry for key "([^"]*)"`)

// templateError makes a text/template error say what is wrong in terms of
// parameters.
func templateError(err error) string {
	if m := missingKey.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Sprintf("{{ .%s }} names no parameter", m[1])
	}
	msg := err.Error()
	// "template: NAME:1:5: ..." names our path, which the caller prints.
	if rest, ok := strings.CutPrefix(msg, "template: "); ok {
		if i := strings.Index(rest, ": "); i >= 0 {
			msg = rest[i+2:]
		}
	}
	return "placeholder: " + msg
}

// validateParameters checks a template's parameter declarations.
func validateParameters(ps []Parameter, p *problems) {
	for i, prm := range ps {
		at := fmt.Sprintf("parameters[%d]", i)
		if !paramName.MatchString(prm.Name) {
			p.addf("%s.name: %q is not an identifier (letters, digits, _)", at, prm.Name)
			continue
		}
		at = fmt.Sprintf("parameter %q", prm.Name)
		if slices.ContainsFunc(ps[:i], func(q Parameter) bool { return q.Name == prm.Name }) {
			p.addf("%s: declared twice", at)
		}
		switch prm.Type {
		case ParamString, ParamInt, ParamBool:
			if len(prm.Values) > 0 {
				p.addf("%s: values are for enum parameters only", at)
			}
		case ParamEnum:
			if len(prm.Values) == 0 {
				p.addf("%s: an enum needs values", at)
			}
			var seen []string
			for j, v := range prm.Values {
				c, ok := canonical(v)
				switch {
				case !ok:
					p.addf("%s: values[%d] is not a string, number or boolean", at, j)
				case slices.Contains(seen, c):
					p.addf("%s: values[%d] is listed twice", at, j)
				}
				seen = append(seen, c)
			}
		default:
			p.addf("%s: type %q is not one of string, int, bool, enum", at, prm.Type)
			continue
		}
		if prm.Default != nil {
			if prm.Required {
				p.addf("%s: a required parameter takes no default", at)
			} else if _, err := coerce(prm, prm.Default); err != nil {
				p.addf("%s: default: %v", at, err)
			}
		}
	}
}

// sample is a parameter's value when none is given: its default, else its
// type's zero value.
func sample(prm Parameter) any {
	if prm.Default != nil {
		if v, err := coerce(prm, prm.Default); err == nil {
			return v
		}
	}
	switch prm.Type {
	case ParamInt:
		return int64(0)
	case ParamBool:
		return false
	}
	return ""
}

// coerce checks that v is a value of prm's type and returns it as a string,
// int64, float64 or bool.
func coerce(prm Parameter, v any) (any, error) {
	switch prm.Type {
	case ParamString:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("want a string, got %s", describe(v))
	case ParamBool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("want a boolean, got %s", describe(v))
	case ParamInt:
		if n, ok := integer(v); ok {
			return n, nil
		}
		return nil, fmt.Errorf("want an integer, got %s", describe(v))
	case ParamEnum:
		c, ok := canonical(v)
		if ok {
			for _, choice := range prm.Values {
				if cc, _ := canonical(choice); cc == c {
					return native(choice), nil
				}
			}
		}
		choices := make([]string, len(prm.Values))
		for i, choice := range prm.Values {
			choices[i] = describe(choice)
		}
		return nil, fmt.Errorf("%s is not one of %s", describe(v), strings.Join(choices, ", "))
	}
	return nil, fmt.Errorf("unknown type %q", prm.Type)
}

// integer returns v as an int64 if it is an integral number.
func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i, true
		}
		if f, err := n.Float64(); err == nil {
			return integer(f)
		}
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return int64(n), true
		}
	}
	return 0, false
}

// native returns a JSON scalar as a string, int64, float64 or bool.
func native(v any) any {
	if n, ok := integer(v); ok {
		return n
	}
	switch n := v.(type) {
	case json.Number:
		f, _ := n.Float64()
		return f
	case float32:
		return float64(n)
	}
	return v
}

// canonical returns a key that equal JSON scalars share: 5, 5.0 and
// json.Number("5") are one; "5" is another.
func canonical(v any) (string, bool) {
	switch x := native(v).(type) {
	case string:
		return "s" + x, true
	case bool:
		return "b" + strconv.FormatBool(x), true
	case int64:
		return "n" + strconv.FormatInt(x, 10), true
	case float64:
		return "n" + strconv.FormatFloat(x, 'g', -1, 64), true
	}
	return "", false
}

// describe shows a value in messages, as JSON.
func describe(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	if len(b) > 40 {
		b = append(b[:37], "..."...)
	}
	return string(b)
}

// DecodeTemplate reads a template's stored parameters and spec: the
// parameters decoded with numbers kept as json.Number.
func DecodeTemplate(parameters, spec json.RawMessage) (Template, error) {
	t := Template{Spec: spec}
	if len(parameters) > 0 {
		dec := json.NewDecoder(bytes.NewReader(parameters))
		dec.UseNumber()
		if err := dec.Decode(&t.Parameters); err != nil {
			return Template{}, fmt.Errorf("template parameters: %w", err)
		}
	}
	return t, nil
}
