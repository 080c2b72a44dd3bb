package secrets

import (
	"encoding/json"
	"fmt"
)

// Field returns the value of key in a structured secret: value is a JSON
// object, and a reference's `key` names one of its fields. A string field
// is returned as is, any other as JSON.
func Field(value, key string) (string, error) {
	var fields map[string]any
	if err := json.Unmarshal([]byte(value), &fields); err != nil {
		return "", fmt.Errorf("has key %q but its value is not a JSON object", key)
	}
	f, ok := fields[key]
	if !ok {
		return "", fmt.Errorf("its JSON object has no key %q", key)
	}
	if s, isString := f.(string); isString {
		return s, nil
	}
	b, _ := json.Marshal(f)
	return string(b), nil
}
