package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestNamesAndBytes: names that would be unreachable or misleading, and
// NUL bytes that the stores keep differently, get a 400 before any store
// sees them (issue 11, item 10).
func TestNamesAndBytes(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) { t.Parallel(); testNamesAndBytes(t, setup(t)) })
	t.Run("postgres", func(t *testing.T) { t.Parallel(); testNamesAndBytes(t, setupWith(t, options{postgres: true})) })
}

func testNamesAndBytes(t *testing.T, b *bundle) {
	id := b.createPipeline(t, "ok")
	rlo := "\u202e"
	job := func(name, run string) map[string]any {
		return map[string]any{"name": name, "steps": []map[string]string{{"name": "a", "run": run}}}
	}

	tests := []struct {
		name, method, path string
		body               any
	}{
		{"pipeline named ..", "POST", "/api/v1/pipelines", map[string]string{"name": "..", "definition": validPipeline}},
		{"pipeline named .", "POST", "/api/v1/pipelines", map[string]string{"name": ".", "definition": validPipeline}},
		{"pipeline with a right-to-left override", "POST", "/api/v1/pipelines", map[string]string{"name": "gpj." + rlo + "exe", "definition": validPipeline}},
		{"pipeline renamed ..", "PUT", "/api/v1/pipelines/" + id, map[string]string{"name": ".."}},
		{"definition with a NUL", "POST", "/api/v1/pipelines", map[string]string{"name": "n", "definition": validPipeline + "# \x00\n"}},
		{"branch with a NUL", "POST", "/api/v1/pipelines/" + id + "/runs", map[string]string{"branch": "main\x00evil"}},
		{"sha with a NUL", "POST", "/api/v1/pipelines/" + id + "/runs", map[string]string{"sha": "\x00"}},
		{"ref with an override", "POST", "/api/v1/pipelines/" + id + "/runs", map[string]string{"ref": "refs/heads/" + rlo + "niam"}},
		{"event with a NUL", "POST", "/api/v1/pipelines/" + id + "/runs", map[string]string{"event": "push\x00"}},
		{"variable value with a NUL", "POST", "/api/v1/pipelines/" + id + "/runs", map[string]any{"variables": map[string]string{"A": "x\x00"}}},
		{"variable name with an isolate", "POST", "/api/v1/pipelines/" + id + "/runs", map[string]any{"variables": map[string]string{"A\u2066": "x"}}},
		{"job command with a NUL", "POST", "/api/v1/jobs", job("j", "echo \x00")},
		{"job named with an override", "POST", "/api/v1/jobs", job("j"+rlo, "echo")},
		{"template named ..", "POST", "/api/v1/templates", strings.Replace(deployTemplate, `"deploy"`, `".."`, 1)},
		{"template with a NUL", "POST", "/api/v1/templates", strings.Replace(deployTemplate, `"deploy a service"`, `"a\u0000b"`, 1)},
		{"secret value with a NUL", "PUT", "/api/v1/secrets/S", map[string]string{"value": "a\x00b"}},
		{"token named with a NUL", "POST", "/api/v1/tokens", map[string]string{"name": "t\x00", "role": "viewer"}},
		{"path with a NUL", "GET", "/api/v1/pipelines/ok%00", nil},
		{"query with a NUL", "GET", "/api/v1/jobs?run_id=%00", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.do(t, tt.method, tt.path, b.admin, tt.body).wantError(t, http.StatusBadRequest, "invalid_request")
		})
	}
	if calls := b.control.Calls(); len(calls) > 0 {
		t.Errorf("refused requests reached the control: %v", calls)
	}
	var list struct{ Items []struct{ Name string } }
	b.do(t, "GET", "/api/v1/pipelines", b.viewer, nil).want(t, 200).json(t, &list)
	if len(list.Items) != 1 || list.Items[0].Name != "ok" {
		t.Errorf("pipelines = %+v, want only ok", list.Items)
	}

	// A store's refusal is answered in the API's words, not the database's.
	msg, _ := b.do(t, "POST", "/api/v1/pipelines", b.developer, map[string]string{"name": "ok", "definition": validPipeline}).wantError(t, http.StatusConflict, "conflict")
	if msg != `pipeline "ok": conflict` {
		t.Errorf("conflict message %q, want only the API's words", msg)
	}

	// Text that only looks odd passes: a backslash before u0000, right-to-left
	// script, dots inside a name.
	b.do(t, "POST", "/api/v1/pipelines", b.developer, map[string]string{"name": "a..b", "definition": validPipeline + "# \\u0000 שלום\n"}).want(t, 201)
	b.do(t, "POST", "/api/v1/pipelines/"+id+"/runs", b.developer, map[string]string{"branch": "feature/שלום"}).want(t, 201)
}
