package api_test

import (
	"encoding/json"
	"testing"
)

// FuzzRequestBodies sends arbitrary bodies to every route that decodes
// one, as an admin, and checks the answer: never a 5xx, and every refusal
// a JSON error body with a code (issue 11's fuzz target for the API's
// JSON decoding).
func FuzzRequestBodies(f *testing.F) {
	b := setup(f)
	b.createPipeline(f, "fuzzed")
	routes := []struct{ method, path string }{
		{"POST", "/api/v1/pipelines"},
		{"PUT", "/api/v1/pipelines/fuzzed"},
		{"POST", "/api/v1/pipelines/fuzzed/runs"},
		{"POST", "/api/v1/jobs"},
		{"POST", "/api/v1/jobs:batch"},
		{"POST", "/api/v1/templates"},
		{"PUT", "/api/v1/secrets/FUZZ"},
		{"POST", "/api/v1/tokens"},
		{"POST", "/api/v1/agents/tokens"},
	}
	for _, seed := range []string{
		`{}`, `null`, `[]`, `{"name": "x", "definition": "version: \"1\"\nname: x\nstages: []"}`,
		`{"branch": "main", "variables": {"K": "V"}}`, `{"branch": "a\u0000b"}`, `{"name": ".."}`,
		`{"command": "true", "name": "j"}`, `{"value": "s3cr3t"}`, `{"ttl": "10m"}`, `{"a":` + "[[[[[[[[[[", `{"x": 1e999}`,
		`{"name": "\u202eevil"}`, "\xff\xfe", `{"definition": "` + "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" + `"}`,
	} {
		for i := range routes {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := routes[int(route)%len(routes)]
		resp := b.do(t, r.method, r.path, b.admin, body)
		if resp.status >= 500 {
			t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, resp.status, resp.body)
		}
		if resp.status >= 400 {
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			if err := json.Unmarshal(resp.body, &e); err != nil || e.Error.Code == "" {
				t.Fatalf("%s %s %q: %d with no JSON error: %s", r.method, r.path, body, resp.status, resp.body)
			}
		}
	})
}
