package api_test

import (
	"encoding/json"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCreatePipeline(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.do(t, "POST", "/api/v1/pipelines", b.developer,
		map[string]string{"name": "web", "definition": validPipeline, "repository": "https://example.com/web.git"}).want(t, 201)
	var p struct {
		ID, Name, Repository, Definition string
		CreatedAt                        time.Time `json:"created_at"`
		UpdatedAt                        time.Time `json:"updated_at"`
	}
	r.json(t, &p)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(p.ID) {
		t.Errorf("id %q is not a UUID", p.ID)
	}
	if p.Name != "web" || p.Repository != "https://example.com/web.git" || p.Definition != validPipeline || p.CreatedAt.IsZero() {
		t.Errorf("pipeline = %+v", p)
	}
	if p.CreatedAt.Location() != time.UTC {
		t.Errorf("created_at %v is not UTC", p.CreatedAt)
	}
	e := b.wantAudit(t, "dev", "pipeline.create", "pipeline", p.ID)
	if !strings.Contains(string(e.Details), `"web"`) {
		t.Errorf("audit details = %s", e.Details)
	}

	// Without a name, the definition's own name is used.
	var unnamed struct{ Name string }
	b.do(t, "POST", "/api/v1/pipelines", b.developer, map[string]string{"definition": validPipeline}).want(t, 201).json(t, &unnamed)
	if unnamed.Name != "demo" {
		t.Errorf("name = %q, want the definition's", unnamed.Name)
	}

	big := strings.Repeat("#", 1<<20) + "\n" + validPipeline
	tests := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"name taken", map[string]string{"name": "web", "definition": validPipeline}, 409, "conflict"},
		{"unknown field", map[string]string{"name": "x", "definition": validPipeline, "colour": "red"}, 400, "invalid_request"},
		{"malformed JSON", `{"name": "x", "definition": `, 400, "invalid_request"},
		{"not an object", `[1, 2]`, 400, "invalid_request"},
		{"wrong type", `{"name": 5, "definition": "x"}`, 400, "invalid_request"},
		{"trailing data", `{"name": "x", "definition": "x"} {}`, 400, "invalid_request"},
		{"no body", "", 400, "invalid_request"},
		{"no definition", map[string]string{"name": "x"}, 400, "invalid_request"},
		{"bad name", map[string]string{"name": "a/b", "definition": validPipeline}, 400, "invalid_request"},
		{"too large", map[string]string{"name": "big", "definition": big}, 413, "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.do(t, "POST", "/api/v1/pipelines", b.developer, tt.body).wantError(t, tt.status, tt.code)
		})
	}
	// A body without a declared length is cut at the limit too.
	chunked := io.MultiReader(strings.NewReader(`{"name": "big", "definition": "`), strings.NewReader(strings.Repeat("#", 2<<20)+`"}`))
	b.do(t, "POST", "/api/v1/pipelines", b.developer, chunked).wantError(t, 413, "too_large")
}

func TestInvalidPipelineDetails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	def := `version: "1"
name: broken
stages:
  - name: build
    stepz:
      - run: make
  - name: test
    steps:
      - name: unit
        run: go test
        timeout: soon
`
	r := b.do(t, "POST", "/api/v1/pipelines", b.developer, map[string]string{"name": "broken", "definition": def})
	msg, details := r.wantError(t, 400, "invalid_pipeline")
	if msg == "" || len(details) < 2 {
		t.Fatalf("message %q, details %q: want every problem", msg, details)
	}
	positioned := regexp.MustCompile(`^pipeline\.yaml:\d+:\d+: .+`)
	for _, d := range details {
		if !positioned.MatchString(d) {
			t.Errorf("detail %q is not FILE:LINE:COL: message", d)
		}
	}
	if !slices.ContainsFunc(details, func(d string) bool {
		return strings.HasPrefix(d, "pipeline.yaml:5:5: ") && strings.Contains(d, `"stepz"`)
	}) {
		t.Errorf("details %q do not name the unknown key at 5:5", details)
	}
	if n := len(b.auditEntries(t)); n != 0 {
		t.Errorf("%d audit entries for a rejected call", n)
	}
}

// TestPipelineWarnings checks that creating, updating and triggering a
// pipeline answers what it asks for that Oxide does not do yet.
func TestPipelineWarnings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	def := strings.Replace(validPipeline, "stages:", "triggers: [manual]\nstages:", 1)
	want := []string{"pipeline.yaml:3:1: warning: triggers are not matched yet: a run starts only when asked for (oxide run, or the server's API)"}
	var p struct {
		ID       string
		Warnings []string
	}
	b.do(t, "POST", "/api/v1/pipelines", b.developer, map[string]string{"name": "w", "definition": def}).want(t, 201).json(t, &p)
	if !slices.Equal(p.Warnings, want) {
		t.Errorf("create warnings = %q, want %q", p.Warnings, want)
	}
	var run struct{ Warnings []string }
	b.do(t, "POST", "/api/v1/pipelines/w/runs", b.developer, nil).want(t, 201).json(t, &run)
	if !slices.Equal(run.Warnings, want) {
		t.Errorf("trigger warnings = %q, want %q", run.Warnings, want)
	}
	p.Warnings = nil
	b.do(t, "PUT", "/api/v1/pipelines/w", b.developer, map[string]string{"definition": validPipeline}).want(t, 200).json(t, &p)
	if p.Warnings != nil {
		t.Errorf("update warnings = %q, want none", p.Warnings)
	}
	b.do(t, "PUT", "/api/v1/pipelines/w", b.developer, map[string]string{"definition": def}).want(t, 200).json(t, &p)
	if !slices.Equal(p.Warnings, want) {
		t.Errorf("update warnings = %q, want %q", p.Warnings, want)
	}
}

func TestGetUpdateDeletePipeline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.createPipeline(t, "web")

	for _, key := range []string{id, "web"} {
		var p struct{ ID string }
		b.do(t, "GET", "/api/v1/pipelines/"+key, b.viewer, nil).want(t, 200).json(t, &p)
		if p.ID != id {
			t.Errorf("GET %s = %s", key, p.ID)
		}
	}
	b.do(t, "GET", "/api/v1/pipelines/nope", b.viewer, nil).wantError(t, 404, "not_found")

	// Update: only the fields given change.
	var p struct{ Name, Repository, Definition string }
	b.do(t, "PUT", "/api/v1/pipelines/"+id, b.developer, map[string]string{"repository": "git@example.com:web"}).want(t, 200).json(t, &p)
	if p.Name != "web" || p.Repository != "git@example.com:web" || p.Definition != validPipeline {
		t.Errorf("after update: %+v", p)
	}
	b.wantAudit(t, "dev", "pipeline.update", "pipeline", id)
	newDef := strings.Replace(validPipeline, "echo building", "make", 1)
	b.do(t, "PUT", "/api/v1/pipelines/web", b.developer, map[string]string{"name": "webapp", "definition": newDef}).want(t, 200).json(t, &p)
	if p.Name != "webapp" || p.Definition != newDef {
		t.Errorf("after rename: %+v", p)
	}
	_, details := b.do(t, "PUT", "/api/v1/pipelines/"+id, b.developer, map[string]string{"definition": "stages: 5"}).wantError(t, 400, "invalid_pipeline")
	if len(details) == 0 {
		t.Error("no details")
	}
	b.createPipeline(t, "other")
	b.do(t, "PUT", "/api/v1/pipelines/"+id, b.developer, map[string]string{"name": "other"}).wantError(t, 409, "conflict")
	b.do(t, "PUT", "/api/v1/pipelines/nope", b.developer, map[string]string{"name": "x"}).wantError(t, 404, "not_found")
	b.do(t, "PUT", "/api/v1/pipelines/"+id, b.developer, map[string]any{"nmae": "x"}).wantError(t, 400, "invalid_request")

	b.do(t, "DELETE", "/api/v1/pipelines/"+id, b.developer, nil).want(t, 204)
	b.wantAudit(t, "dev", "pipeline.delete", "pipeline", id)
	b.do(t, "GET", "/api/v1/pipelines/"+id, b.viewer, nil).wantError(t, 404, "not_found")
	b.do(t, "DELETE", "/api/v1/pipelines/"+id, b.developer, nil).wantError(t, 404, "not_found")
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		b.createPipeline(t, n)
	}
	type page struct {
		Items []struct{ Name string }
		Next  string
	}
	var names []string
	cursor, pages := "", 0
	for {
		var p page
		path := "/api/v1/pipelines?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		b.do(t, "GET", path, b.viewer, nil).want(t, 200).json(t, &p)
		pages++
		for _, it := range p.Items {
			names = append(names, it.Name)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if strings.Join(names, "") != "abcde" || pages != 3 {
		t.Errorf("paged %d times through %q", pages, names)
	}

	// Without a limit, all five fit and there is no next.
	r := b.do(t, "GET", "/api/v1/pipelines", b.viewer, nil).want(t, 200)
	var raw map[string]json.RawMessage
	r.json(t, &raw)
	if _, ok := raw["next"]; ok {
		t.Errorf("a complete list has next: %s", r.body)
	}

	for _, q := range []string{"limit=0", "limit=x", "cursor=bogus", "cursor=" + "bzotMQ"} {
		b.do(t, "GET", "/api/v1/pipelines?"+q, b.viewer, nil).wantError(t, 400, "invalid_request")
	}
	// limit is capped, not refused.
	b.do(t, "GET", "/api/v1/pipelines?limit=100000", b.viewer, nil).want(t, 200)

	// An empty list is [] not null.
	b2 := setup(t)
	if r := b2.do(t, "GET", "/api/v1/templates", b2.viewer, nil).want(t, 200); !strings.Contains(string(r.body), `"items":[]`) {
		t.Errorf("empty list = %s", r.body)
	}
}
