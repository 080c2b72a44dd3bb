package api_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

type jobResp struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	State       string          `json:"state"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	Priority    int             `json:"priority"`
	Labels      []string        `json:"labels"`
	Error       string          `json:"error"`
	Spec        json.RawMessage `json:"spec"`
	Waiting     string          `json:"waiting_reason"`
}

func TestJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)

	spec := map[string]any{
		"name": "nightly", "steps": []map[string]string{{"name": "a", "run": "echo a"}},
		"labels": []string{"linux"}, "priority": 5, "timeout": "10m", "max_attempts": 2,
		"resources": map[string]string{"cpu": "2", "memory": "1Gi"},
	}
	var job jobResp
	b.do(t, "POST", "/api/v1/jobs", b.developer, spec).want(t, 201).json(t, &job)
	if job.ID == "" || job.Name != "nightly" || job.State != "queued" || job.Priority != 5 || job.MaxAttempts != 2 ||
		!slices.Equal(job.Labels, []string{"linux"}) {
		t.Errorf("job = %+v", job)
	}
	var echoed map[string]any
	if err := json.Unmarshal(job.Spec, &echoed); err != nil || echoed["timeout"] != "10m" {
		t.Errorf("spec = %s", job.Spec)
	}
	b.wantAudit(t, "dev", "job.submit", "job", job.ID)

	tests := []struct {
		name    string
		body    any
		details []string // substrings of details
	}{
		{"nothing to run", map[string]any{"name": "x"}, []string{"command or steps"}},
		{"every problem", map[string]any{"command": "x", "timeout": "soon", "max_attempts": -1}, []string{"name: required", "timeout", "max_attempts"}},
		{"unknown field", map[string]any{"name": "x", "command": "x", "retries": 3}, []string{"retries: unknown field"}},
		{"wrong type", map[string]any{"name": "x", "command": "x", "priority": "high"}, []string{"priority: want a number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, details := b.do(t, "POST", "/api/v1/jobs", b.developer, tt.body).wantError(t, 400, "invalid_request")
			for _, want := range tt.details {
				if !slices.ContainsFunc(details, func(d string) bool { return strings.Contains(d, want) }) {
					t.Errorf("details %q lack %q", details, want)
				}
			}
		})
	}
	b.do(t, "POST", "/api/v1/jobs", b.developer, "").wantError(t, 400, "invalid_request")

	var got jobResp
	b.do(t, "GET", "/api/v1/jobs/"+job.ID, b.viewer, nil).want(t, 200).json(t, &got)
	if got.ID != job.ID || got.Waiting != "no agent is connected" {
		t.Errorf("GET job = %+v", got)
	}
	b.do(t, "GET", "/api/v1/jobs/nope", b.viewer, nil).wantError(t, 404, "not_found")

	b.do(t, "POST", "/api/v1/jobs/"+job.ID+"/cancel", b.developer, nil).want(t, 202).json(t, &got)
	if got.State != "cancelled" || !strings.Contains(got.Error, "dev") {
		t.Errorf("cancelled job = %+v", got)
	}
	b.wantAudit(t, "dev", "job.cancel", "job", job.ID)
	b.do(t, "POST", "/api/v1/jobs/"+job.ID+"/cancel", b.developer, nil).wantError(t, 409, "conflict")
	b.do(t, "POST", "/api/v1/jobs/nope/cancel", b.developer, nil).wantError(t, 404, "not_found")

	b.do(t, "POST", "/api/v1/jobs", b.developer, map[string]any{"name": "second", "command": "true"}).want(t, 201)
	var page struct{ Items []jobResp }
	b.do(t, "GET", "/api/v1/jobs", b.viewer, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 2 {
		t.Errorf("%d jobs", len(page.Items))
	}
	b.do(t, "GET", "/api/v1/jobs?state=queued", b.viewer, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].Name != "second" {
		t.Errorf("queued jobs = %+v", page.Items)
	}
	b.do(t, "GET", "/api/v1/jobs?state=sleeping", b.viewer, nil).wantError(t, 400, "invalid_request")
}

// TestSubmitJobsBatch: POST /jobs:batch queues every job of a valid batch
// in order; a batch with invalid specs is refused whole, naming every
// problem by index, and queues nothing.
func TestSubmitJobsBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var page struct{ Items []jobResp }
	b.do(t, "POST", "/api/v1/jobs:batch", b.developer, map[string]any{"jobs": []map[string]any{
		{"name": "one", "command": "true"}, {"name": "two", "command": "true"}, {"name": "three", "command": "true"},
	}}).want(t, 201).json(t, &page)
	if len(page.Items) != 3 || page.Items[0].Name != "one" || page.Items[2].Name != "three" || page.Items[1].State != "queued" {
		t.Fatalf("batch answer: %+v", page.Items)
	}
	_, details := b.do(t, "POST", "/api/v1/jobs:batch", b.developer, map[string]any{"jobs": []map[string]any{
		{"name": "fine", "command": "true"}, {"name": "no-command"}, {"name": "x", "command": "true", "bogus": 1},
	}}).wantError(t, 400, "invalid_request")
	if len(details) != 2 || !strings.HasPrefix(details[0], "jobs[1]: ") || !strings.HasPrefix(details[1], "jobs[2]: ") {
		t.Errorf("problems %q, want one for jobs[1] and one for jobs[2]", details)
	}
	b.do(t, "POST", "/api/v1/jobs:batch", b.developer, map[string]any{"jobs": []map[string]any{}}).wantError(t, 400, "invalid_request")
	b.do(t, "POST", "/api/v1/jobs:batch", b.viewer, map[string]any{"jobs": []map[string]any{{"name": "v", "command": "true"}}}).wantError(t, 403, "forbidden")
	var all struct{ Items []jobResp }
	b.do(t, "GET", "/api/v1/jobs", b.viewer, nil).want(t, 200).json(t, &all)
	if len(all.Items) != 3 {
		t.Errorf("%d jobs after the batches, want the first batch's 3 only", len(all.Items))
	}
}

type templateResp struct {
	ID, Name, Description string
	Version               int
	Parameters            []map[string]any
	Spec                  map[string]any
}

const deployTemplate = `{
	"name": "deploy",
	"description": "deploy a service",
	"parameters": [
		{"name": "service", "type": "string", "required": true},
		{"name": "replicas", "type": "int", "default": 2},
		{"name": "canary", "type": "bool"},
		{"name": "env", "type": "enum", "values": ["staging", "production"], "default": "staging"}
	],
	"spec": {
		"name": "deploy {{ .service }}",
		"command": "deploy --replicas={{ .replicas }}{{ if .canary }} --canary{{ end }} {{ .service }}",
		"labels": ["{{ .env }}"],
		"max_attempts": "{{ .replicas }}"
	}
}`

func TestTemplates(t *testing.T) {
	t.Parallel()
	b := setup(t)

	var tp templateResp
	b.do(t, "POST", "/api/v1/templates", b.developer, deployTemplate).want(t, 201).json(t, &tp)
	if tp.ID == "" || tp.Name != "deploy" || tp.Version != 1 || len(tp.Parameters) != 4 || tp.Spec["name"] != "deploy {{ .service }}" {
		t.Fatalf("template = %+v", tp)
	}
	if tp.Parameters[1]["default"] != 2.0 {
		t.Errorf("replicas default = %#v", tp.Parameters[1]["default"])
	}
	b.wantAudit(t, "dev", "template.create", "template", tp.ID)
	b.do(t, "POST", "/api/v1/templates", b.developer, deployTemplate).wantError(t, 409, "conflict")

	invalid := []struct {
		name    string
		body    string
		details []string
	}{
		{"bad parameter type", `{"name": "t", "parameters": [{"name": "x", "type": "float"}], "spec": {"name": "a", "command": "b"}}`, []string{`type "float"`}},
		{"undeclared placeholder", `{"name": "t", "parameters": [], "spec": {"name": "{{ .who }}", "command": "b"}}`, []string{`{{ .who }} names no parameter`}},
		{"unknown spec field", `{"name": "t", "parameters": [], "spec": {"name": "a", "command": "b", "colour": 1}}`, []string{"colour: unknown field"}},
		{"static spec invalid", `{"name": "t", "parameters": [], "spec": {"name": "a"}}`, []string{"command or steps"}},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			_, details := b.do(t, "POST", "/api/v1/templates", b.developer, tt.body).wantError(t, 400, "invalid_request")
			for _, want := range tt.details {
				if !slices.ContainsFunc(details, func(d string) bool { return strings.Contains(d, want) }) {
					t.Errorf("details %q lack %q", details, want)
				}
			}
		})
	}
	b.do(t, "POST", "/api/v1/templates", b.developer, `{"name": "t", "spec": {"name": "a", "command": "b"}, "owner": "me"}`).wantError(t, 400, "invalid_request")
	b.do(t, "POST", "/api/v1/templates", b.developer, `{"name": "t"}`).wantError(t, 400, "invalid_request")

	// Instantiate by name.
	var job jobResp
	b.do(t, "POST", "/api/v1/templates/deploy/instantiate", b.developer,
		`{"parameters": {"service": "api", "replicas": 3, "canary": true, "env": "production"}}`).want(t, 201).json(t, &job)
	var spec map[string]any
	if err := json.Unmarshal(job.Spec, &spec); err != nil {
		t.Fatal(err)
	}
	if job.Name != "deploy api" || spec["command"] != "deploy --replicas=3 --canary api" || job.MaxAttempts != 3 ||
		!slices.Equal(job.Labels, []string{"production"}) {
		t.Errorf("job = %+v, spec %v", job, spec)
	}
	e := b.wantAudit(t, "dev", "template.instantiate", "job", job.ID)
	if !strings.Contains(string(e.Details), tp.ID) {
		t.Errorf("audit details = %s", e.Details)
	}

	paramErrors := []struct {
		params string
		want   []string
	}{
		{`{}`, []string{`"service": required`}},
		{`{"service": "a", "region": "eu"}`, []string{`"region": unknown`}},
		{`{"service": "a", "replicas": "three"}`, []string{`"replicas": want an integer, got "three"`}},
		{`{"service": "a", "replicas": 1.5}`, []string{`"replicas": want an integer`}},
		{`{"service": "a", "canary": "yes"}`, []string{`"canary": want a boolean`}},
		{`{"service": "a", "env": "dev"}`, []string{`"env": "dev" is not one of "staging", "production"`}},
		{`{"service": 7, "size": 1, "canary": 0}`, []string{`"service": want a string`, `"size": unknown`, `"canary": want a boolean`}},
	}
	for _, tt := range paramErrors {
		msg, details := b.do(t, "POST", "/api/v1/templates/"+tp.ID+"/instantiate", b.developer, `{"parameters": `+tt.params+`}`).wantError(t, 400, "invalid_request")
		if len(details) != len(tt.want) {
			t.Errorf("%s: details %q, want %d", tt.params, details, len(tt.want))
		}
		for _, want := range tt.want {
			if !slices.ContainsFunc(details, func(d string) bool { return strings.Contains(d, want) }) {
				t.Errorf("%s: details %q lack %q", tt.params, details, want)
			}
		}
		if !strings.Contains(msg, "deploy") {
			t.Errorf("message %q does not name the template", msg)
		}
	}
	b.do(t, "POST", "/api/v1/templates/nope/instantiate", b.developer, `{"parameters": {}}`).wantError(t, 404, "not_found")

	// Update: a new version; absent fields stay.
	b.do(t, "PUT", "/api/v1/templates/deploy", b.developer, `{"description": "v2"}`).want(t, 200).json(t, &tp)
	if tp.Version != 2 || tp.Description != "v2" || len(tp.Parameters) != 4 {
		t.Errorf("updated = %+v", tp)
	}
	b.wantAudit(t, "dev", "template.update", "template", tp.ID)
	b.do(t, "PUT", "/api/v1/templates/deploy", b.developer, `{"parameters": []}`).wantError(t, 400, "invalid_request") // placeholders now name nothing
	b.do(t, "GET", "/api/v1/templates/deploy", b.viewer, nil).want(t, 200).json(t, &tp)
	if tp.Version != 2 {
		t.Errorf("a rejected update changed the template: %+v", tp)
	}
	var page struct{ Items []templateResp }
	b.do(t, "GET", "/api/v1/templates", b.viewer, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 1 {
		t.Errorf("templates = %+v", page.Items)
	}
	b.do(t, "DELETE", "/api/v1/templates/"+tp.ID, b.developer, nil).want(t, 204)
	b.wantAudit(t, "dev", "template.delete", "template", tp.ID)
	b.do(t, "GET", "/api/v1/templates/"+tp.ID, b.viewer, nil).wantError(t, 404, "not_found")
}
