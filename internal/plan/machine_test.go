package plan

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/spec"
)

// compile parses and compiles a pipeline for the machine's tests.
func compile(t *testing.T, src string, trig Trigger) *Run {
	t.Helper()
	p, err := pipeline.Parse("pipeline.yaml", []byte("version: \"1\"\nname: ci\n"+src))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile(p, trig)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// record renders actions as the harness compares them.
func record(r *Run, acts []Action) []string {
	var out []string
	for _, a := range acts {
		switch a := a.(type) {
		case Start:
			s := "start " + r.Nodes[a.Node].Name
			if a.Attempt > 1 {
				s += fmt.Sprintf(" attempt %d after %s", a.Attempt, a.Delay)
			}
			out = append(out, s)
		case Wait:
			out = append(out, "wait "+r.Nodes[a.Node].Name)
		case End:
			s := fmt.Sprintf("end %s %s: %s", r.Nodes[a.Node].Name, a.Status, a.Reason)
			if a.Stop {
				s += " (stop)"
			}
			out = append(out, s)
		case Finish:
			out = append(out, "finish "+string(a.Status))
		}
	}
	return out
}

// finished is a Finished event of the node named name.
func finished(r *Run, name string, status spec.Status) Finished {
	for _, n := range r.Nodes {
		if n.Name == name {
			return Finished{Node: n.Index, Status: status}
		}
	}
	panic("no node " + name)
}

// TestMachine feeds events to the machine, as Nomad's scheduler harness
// does, and compares the actions it records with the expected ones.
func TestMachine(t *testing.T) {
	t.Parallel()
	type step struct {
		ev   func(r *Run) Event
		want []string
	}
	fin := func(name string, s spec.Status) func(r *Run) Event {
		return func(r *Run) Event { return finished(r, name, s) }
	}
	advance := func(*Run) Event { return Advance{} }
	tests := []struct {
		name  string
		yaml  string
		trig  Trigger
		local bool
		steps []step
	}{
		{"a chain succeeds", `
stages:
  - {name: build, steps: [{name: s, run: "true"}]}
  - {name: test, steps: [{name: s, run: "true"}]}`, Trigger{}, false, []step{
			{advance, []string{"start build"}},
			{fin("build", spec.StatusSuccess), []string{"end build success: ", "start test"}},
			{fin("test", spec.StatusSuccess), []string{"end test success: ", "finish success"}},
		}},
		{"a failure skips dependents, always() and failure() still run", `
stages:
  - {name: build, steps: [{name: s, run: "false"}]}
  - {name: test, steps: [{name: s, run: "true"}]}
  - {name: cleanup, depends_on: [build], condition: "always()", steps: [{name: s, run: "true"}]}
  - {name: notify, depends_on: [test], condition: "failure()", steps: [{name: s, run: "true"}]}`, Trigger{}, false, []step{
			{advance, []string{"start build"}},
			{fin("build", spec.StatusFailure), []string{"end build failure: ",
				`end test skipped: dependency "build" failed`, "start cleanup", "start notify"}},
			{fin("cleanup", spec.StatusSuccess), []string{"end cleanup success: "}},
			{fin("notify", spec.StatusSuccess), []string{"end notify success: ", "finish failure"}},
		}},
		{"a false condition skips without failing", `
stages:
  - {name: deploy, condition: "branch == 'main'", steps: [{name: s, run: "true"}]}
  - {name: after, steps: [{name: s, run: "true"}]}`, Trigger{Branch: "dev"}, false, []step{
			{advance, []string{"end deploy skipped: condition is false: branch == 'main'", "start after"}},
			{fin("after", spec.StatusSuccess), []string{"end after success: ", "finish success"}},
		}},
		{"stage variables and outputs reach conditions", `
stages:
  - {name: build, steps: [{name: s, id: v, run: "true"}]}
  - {name: ship, variables: {TARGET: prod}, condition: "TARGET == 'prod' && steps.v.outputs.ok == 'yes'", steps: [{name: s, run: "true"}]}`, Trigger{}, false, []step{
			{advance, []string{"start build"}},
			{func(r *Run) Event {
				return Finished{Node: 0, Status: spec.StatusSuccess, Outputs: map[string]map[string]string{"v": {"ok": "yes"}}}
			}, []string{"end build success: ", "start ship"}},
		}},
		{"stage retry starts the job again, then gives up", `
stages:
  - {name: flaky, retry: {max_attempts: 3, delay_seconds: 2, exponential_backoff: true}, steps: [{name: s, run: "false"}]}`, Trigger{}, false, []step{
			{advance, []string{"start flaky"}},
			{fin("flaky", spec.StatusFailure), []string{"start flaky attempt 2 after 2s"}},
			{fin("flaky", spec.StatusFailure), []string{"start flaky attempt 3 after 4s"}},
			{fin("flaky", spec.StatusFailure), []string{"end flaky failure: ", "finish failure"}},
		}},
		{"fail_fast cancels the other instances", `
stages:
  - name: test
    matrix: {dimensions: {os: [a, b, c]}, max_parallel: 2}
    steps: [{name: s, run: "true"}]`, Trigger{}, false, []step{
			{advance, []string{"start test (a)", "start test (b)"}},
			{fin("test (a)", spec.StatusFailure), []string{"end test (a) failure: ",
				"end test (b) cancelled: cancelled by fail_fast: test (a) failed (stop)",
				"end test (c) cancelled: cancelled by fail_fast: test (a) failed", "finish failure"}},
			{fin("test (b)", spec.StatusCancelled), nil},
		}},
		{"approval: wait, then start", `
stages:
  - {name: deploy, approval: {required: true}, steps: [{name: s, run: "true"}]}`, Trigger{}, false, []step{
			{advance, []string{"wait deploy"}},
			{func(*Run) Event { return Approved{Node: 0} }, []string{"start deploy"}},
			{fin("deploy", spec.StatusSuccess), []string{"end deploy success: ", "finish success"}},
		}},
		{"approval rejected", `
stages:
  - {name: deploy, approval: {required: true}, steps: [{name: s, run: "true"}]}
  - {name: after, steps: [{name: s, run: "true"}]}`, Trigger{}, false, []step{
			{advance, []string{"wait deploy"}},
			{func(*Run) Event { return Rejected{Node: 0, Status: spec.StatusCancelled, Reason: "rejected by ops"} }, []string{
				"end deploy cancelled: rejected by ops", `end after skipped: dependency "deploy" failed`, "finish failure"}},
		}},
		{"approval locally", `
stages:
  - {name: deploy, approval: {required: true}, steps: [{name: s, run: "true"}]}`, Trigger{}, true, []step{
			{advance, []string{"end deploy skipped: needs an approval, which only a server can record", "finish success"}},
		}},
		{"cancel stops running nodes and ends the others", `
stages:
  - {name: build, steps: [{name: s, run: "sleep 9"}]}
  - {name: test, steps: [{name: s, run: "true"}]}`, Trigger{}, false, []step{
			{advance, []string{"start build"}},
			{func(*Run) Event { return Cancel{Status: spec.StatusTimeout, Reason: "the pipeline timed out"} }, []string{
				"end build timeout: not finished: the pipeline timed out (stop)",
				"end test timeout: not finished: the pipeline timed out", "finish timeout"}},
			{fin("build", spec.StatusCancelled), nil},
		}},
		{"a condition the worker decides starts the job", `
stages:
  - {name: build, steps: [{name: s, run: "false"}]}
  - {name: lint, condition: "hashFiles('go.sum') != ''", steps: [{name: s, run: "true"}]}`, Trigger{}, false, []step{
			{advance, []string{"start build"}},
			{fin("build", spec.StatusFailure), []string{"end build failure: ", "start lint"}},
			{fin("lint", spec.StatusSkipped), []string{"end lint skipped: ", "finish failure"}},
		}},
		{"a repeated report changes nothing", `
stages:
  - {name: build, steps: [{name: s, run: "true"}]}
  - {name: test, steps: [{name: s, run: "true"}]}`, Trigger{}, false, []step{
			{advance, []string{"start build"}},
			{fin("build", spec.StatusSuccess), []string{"end build success: ", "start test"}},
			{fin("build", spec.StatusSuccess), nil},
			{advance, nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := compile(t, tt.yaml, tt.trig)
			m := NewMachine("run-1", r)
			m.Approvals = !tt.local
			for i, s := range tt.steps {
				got := record(r, m.Next(s.ev(r)))
				if strings.Join(got, "\n") != strings.Join(s.want, "\n") {
					t.Fatalf("event %d: actions\n  %s\nwant\n  %s", i+1, strings.Join(got, "\n  "), strings.Join(s.want, "\n  "))
				}
			}
		})
	}
}

// TestCompiledRunRoundTrip checks that the stored form of a compiled run
// advances the run as the run in memory does: decisions read it alone.
func TestCompiledRunRoundTrip(t *testing.T) {
	t.Parallel()
	r := compile(t, `
variables: {GREETING: hi}
stages:
  - name: test
    matrix: {dimensions: {go: ["1.25", 1.26]}}
    retry: {max_attempts: 2, delay_seconds: 1}
    variables: {LEVEL: "${{ matrix.go }}"}
    timeout: 5m
    steps: [{name: s, id: t, run: "echo $GREETING", timeout: 1m, retry: {max_attempts: 2}}]
  - {name: lint, condition: "hashFiles('go.sum') != ''", steps: [{name: s, run: "true"}]}`, Trigger{Branch: "main", Variables: map[string]string{"K": "V"}})
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := back.Encode()
	if string(again) != string(b) {
		t.Fatalf("a round trip changed the compiled run:\n%s\n%s", b, again)
	}
	if back.Trigger.Ref != "refs/heads/main" || back.Nodes[0].Job.Timeout != 5*time.Minute || back.Nodes[0].Job.Steps[0].Retry.MaxAttempts != 2 {
		t.Errorf("compiled run lost fields: %s", b)
	}
	if back.ReadsOutputs {
		t.Error("a run that reads no steps.* says it reads outputs")
	}
	if r := compile(t, `
stages:
  - {name: a, steps: [{name: s, id: v, run: "true"}]}
  - {name: b, steps: [{name: s, run: "echo ${{ steps.v.outputs.x }}"}]}`, Trigger{}); !r.ReadsOutputs {
		t.Error("a run that reads steps.* says it reads no outputs")
	}
	if back.Nodes[2].Job.Condition == nil || back.Nodes[2].Condition != nil {
		t.Errorf("hashFiles() condition should travel with the job: %+v", back.Nodes[2])
	}
	var raw map[string]any
	_ = json.Unmarshal(b, &raw)
	raw["version"] = 99
	b, _ = json.Marshal(raw)
	if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("a compiled run of another schema version: err = %v", err)
	}
}

// TestDecodeLegacyRun: a run stored before runs were compiled (its trigger
// with the pipeline's YAML) is compiled once when read, so that an upgrade
// strands no run in flight.
func TestDecodeLegacyRun(t *testing.T) {
	t.Parallel()
	stored := `{"event":"api","branch":"main","variables":{"K":"V"},"actor":"ops","definition":"version: \"1\"\nname: old\nstages:\n  - {name: build, steps: [{name: s, run: make}]}\n"}`
	r, err := Decode([]byte(stored))
	if err != nil {
		t.Fatal(err)
	}
	if r.Pipeline != "old" || r.Trigger.Ref != "refs/heads/main" || r.Trigger.Actor != "ops" || len(r.Nodes) != 1 || r.Nodes[0].Job.Steps[0].Run != "make" {
		t.Errorf("legacy run compiled as %+v", r)
	}
	if v := r.Nodes[0].Job.Variables; len(v) != 1 || v[0] != (spec.Var{Name: "K", Value: "V"}) {
		t.Errorf("variables %v", v)
	}
	b, _ := r.Encode()
	for _, stored := range []string{stored, string(b)} {
		if tr := StoredTrigger([]byte(stored)); tr.Branch != "main" || tr.Actor != "ops" || tr.Variables["K"] != "V" {
			t.Errorf("StoredTrigger(%.40s…) = %+v", stored, tr)
		}
	}
	if _, err := Decode([]byte(`{"event":"api"}`)); err == nil {
		t.Error("a trigger with neither version nor definition decoded")
	}
}
