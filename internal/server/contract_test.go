package server

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store/postgres/pgtest"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// contractPipeline greets with a variable of the trigger, then tests.
const contractPipeline = `version: "1"
name: contract
stages:
  - name: build
    steps:
      - name: greet
        run: echo "greeting=$GREETING"
  - name: test
    depends_on: [build]
    steps:
      - name: check
        run: echo checked
`

// runJSON is what the contract promises of a Run (docs/api.md).
type runJSON struct {
	ID         string            `json:"id"`
	PipelineID string            `json:"pipeline_id"`
	Number     int               `json:"run_number"`
	Status     string            `json:"status"`
	Branch     string            `json:"branch"`
	Variables  map[string]string `json:"variables"`
	Stages     []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Steps  []struct {
			Name     string `json:"name"`
			Status   string `json:"status"`
			ExitCode *int   `json:"exit_code"`
		} `json:"steps"`
	} `json:"stages"`
}

// TestContract drives a real server (store, NATS, scheduler, an in-process
// worker, the HTTP listener) through the calls that scripts outside rely on,
// with nothing but net/http and encoding/json: on SQLite and, when
// OXIDE_TEST_POSTGRES names one, on PostgreSQL.
func TestContract(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testContract(t, startServer(t, testConfig(t)))
	})
	t.Run("postgres", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.DatabaseURL = pgtest.DSN(t)
		testContract(t, startServer(t, cfg))
	})
}

func testContract(t *testing.T, s *testServer) {
	// Health answers without a token.
	var health struct{ Status string }
	s.call(t, "GET", "/health", "", nil).want(t, 200, &health)
	if health.Status != "ok" {
		t.Errorf("GET /health: status %q, want ok", health.Status)
	}

	// Everything else needs a known token.
	for _, tok := range []string{"", "oxt_not-a-token", strings.ToUpper(s.Token)} {
		var e apiError
		s.call(t, "GET", "/api/v1/pipelines", tok, nil).want(t, 401, &e)
		if e.Error.Code != "unauthorized" {
			t.Errorf("token %q: code %q, want unauthorized", tok, e.Error.Code)
		}
	}
	s.call(t, "POST", "/api/v1/pipelines", "", map[string]string{"name": "x", "definition": contractPipeline}).want(t, 401, nil)

	// Create a pipeline.
	var p struct{ ID, Name string }
	s.call(t, "POST", "/api/v1/pipelines", s.Token, map[string]string{"name": "contract", "definition": contractPipeline}).want(t, 201, &p)
	if p.ID == "" || p.Name != "contract" {
		t.Fatalf("created pipeline %+v: want an id and the name", p)
	}

	// An invalid definition names every problem by position.
	bad := "version: \"1\"\nname: bad\nstages:\n  - name: build\n    stepz:\n      - run: make\n"
	var e apiError
	s.call(t, "POST", "/api/v1/pipelines", s.Token, map[string]string{"name": "bad", "definition": bad}).want(t, 400, &e)
	positioned := regexp.MustCompile(`^pipeline\.yaml:\d+:\d+: .+`)
	if e.Error.Code != "invalid_pipeline" || len(e.Error.Details) == 0 {
		t.Errorf("invalid definition: %+v, want invalid_pipeline with details", e.Error)
	}
	for _, d := range e.Error.Details {
		if !positioned.MatchString(d) {
			t.Errorf("detail %q is not pipeline.yaml:LINE:COL: message", d)
		}
	}
	if !slices.ContainsFunc(e.Error.Details, func(d string) bool { return strings.HasPrefix(d, "pipeline.yaml:5:5: ") }) {
		t.Errorf("details %q do not point at the unknown key (5:5)", e.Error.Details)
	}

	// Trigger a run with a variable.
	var run runJSON
	s.call(t, "POST", "/api/v1/pipelines/"+p.ID+"/runs", s.Token, map[string]any{
		"branch": "main", "variables": map[string]string{"GREETING": "hello-from-contract"},
	}).want(t, 201, &run)
	if run.ID == "" || run.PipelineID != p.ID || run.Status != "queued" || run.Number != 1 {
		t.Fatalf("triggered run %+v: want an id, the pipeline, queued, number 1", run)
	}
	s.call(t, "GET", "/api/v1/runs/"+run.ID, "", nil).want(t, 401, nil)
	s.call(t, "GET", "/api/v1/runs/"+run.ID, "oxt_wrong", nil).want(t, 401, nil)

	id := run.ID
	testkit.Until(t, 60*time.Second, func() (bool, string) {
		run = runJSON{}
		s.call(t, "GET", "/api/v1/runs/"+id, s.Token, nil).want(t, 200, &run)
		return run.Status != "queued" && run.Status != "running", "run status " + run.Status
	})
	if run.Status != "success" {
		t.Fatalf("run ended %s, want success: %+v", run.Status, run)
	}
	if run.Branch != "main" || run.Variables["GREETING"] != "hello-from-contract" {
		t.Errorf("run branch %q, variables %v: want the trigger's", run.Branch, run.Variables)
	}

	// The stage/step tree.
	type node struct{ stage, step, status string }
	var tree []node
	for _, st := range run.Stages {
		if st.Status != "success" {
			t.Errorf("stage %s: %s, want success", st.Name, st.Status)
		}
		for _, sp := range st.Steps {
			tree = append(tree, node{st.Name, sp.Name, sp.Status})
			if sp.ExitCode == nil || *sp.ExitCode != 0 {
				t.Errorf("step %s/%s: exit code %v, want 0", st.Name, sp.Name, sp.ExitCode)
			}
		}
	}
	if want := []node{{"build", "greet", "success"}, {"test", "check", "success"}}; !slices.Equal(tree, want) {
		t.Errorf("stage/step tree %v, want %v", tree, want)
	}

	// The logs carry the step's output: the variable reached the step.
	var logs struct {
		Lines []struct{ Stage, Step, Stream, Text string }
		Next  string
	}
	s.call(t, "GET", "/api/v1/runs/"+id+"/logs", s.Token, nil).want(t, 200, &logs)
	if !slices.ContainsFunc(logs.Lines, func(l struct{ Stage, Step, Stream, Text string }) bool {
		return l.Stage == "build" && l.Step == "greet" && l.Stream == "stdout" && l.Text == "greeting=hello-from-contract"
	}) {
		t.Errorf("run logs %+v: no stdout line \"greeting=hello-from-contract\" of build/greet", logs.Lines)
	}
	if logs.Next == "" {
		t.Error("run logs: no next cursor")
	}
	s.call(t, "GET", "/api/v1/runs/"+id+"/logs", "", nil).want(t, 401, nil)
}
