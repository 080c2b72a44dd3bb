package pipeline

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// examples is the reference corpus; CI clones shared/ beside the repository.
const examples = "../../../shared/reference/oxide-ci/examples"

// exampleFiles returns the *.yaml files of the reference corpus.
func exampleFiles(tb testing.TB) []string {
	var files []string
	err := filepath.WalkDir(examples, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".yaml") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		tb.Skipf("reference examples not available: %v", err)
	}
	return files
}

func stage(t *testing.T, p *Pipeline, name string) *Stage {
	t.Helper()
	for _, s := range p.Stages {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("%s: no stage %q", p.File, name)
	return nil
}

func step(t *testing.T, s *Stage, name string) *Step {
	t.Helper()
	for _, st := range s.Steps {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("stage %q: no step %q", s.Name, name)
	return nil
}

func check(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func TestReferenceExamples(t *testing.T) {
	files := exampleFiles(t)
	if len(files) < 21 {
		t.Fatalf("found %d example files in %s, want the corpus's 21", len(files), examples)
	}
	parsed := make(map[string]*Pipeline)
	for _, file := range files {
		p, err := Load(file)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		rel, _ := filepath.Rel(examples, file)
		parsed[filepath.ToSlash(rel)] = p
	}
	if t.Failed() {
		return
	}

	rust := parsed["rust-cli/.oxide-ci/pipeline.yaml"]
	m := stage(t, rust, "build").Matrix
	check(t, "rust-cli build dimensions", m.Dimensions, []Dimension{{Name: "os", Values: []any{"linux", "macos", "windows"}}})
	check(t, "rust-cli build includes", len(m.Include), 3)
	check(t, "rust-cli build include[2]", m.Include[2], map[string]any{"os": "windows", "target": "x86_64-pc-windows-msvc"})
	check(t, "rust-cli build fail_fast", m.FailFast, true)

	m = stage(t, parsed["matrix-pipeline.yaml"], "test").Matrix
	check(t, "matrix-pipeline test dimensions", m.Dimensions, []Dimension{
		{Name: "os", Values: []any{"linux", "macos", "windows"}},
		{Name: "rust", Values: []any{"1.74", "1.75", "stable"}},
	})
	check(t, "matrix-pipeline test include", m.Include, []map[string]any{{"os": "linux", "rust": "nightly", "experimental": true}})
	check(t, "matrix-pipeline test exclude", m.Exclude, []map[string]any{{"os": "windows", "rust": "1.74"}})
	check(t, "matrix-pipeline test max_parallel", m.MaxParallel, 6)
	check(t, "matrix-pipeline test continue_on_error",
		step(t, stage(t, parsed["matrix-pipeline.yaml"], "test"), "test").ContinueOnError, "${{ matrix.experimental || false }}")

	outputs := parsed["step-outputs-test/.oxide-ci/pipeline.yaml"]
	for _, s := range outputs.Stages {
		check(t, "step-outputs-test "+s.Name+" HasDependsOn", s.HasDependsOn, false)
	}

	mono := parsed["monorepo/.oxide-ci/pipeline.yaml"]
	check(t, "monorepo changes step id", step(t, stage(t, mono, "detect"), "detect-changes").ID, "changes")
	check(t, "monorepo shared condition", stage(t, mono, "shared").Condition.If, "steps.changes.outputs.shared == 'true'")
	check(t, "monorepo api depends_on", stage(t, mono, "api").DependsOn, []string{"detect", "shared"})

	aws := parsed["deploy-aws/.oxide-ci/pipeline.yaml"]
	check(t, "deploy-aws triggers", aws.Triggers[0].Type, TriggerPush)
	check(t, "deploy-aws trigger paths", aws.Triggers[0].Paths, []string{"src/**", "infrastructure/**"})
	check(t, "deploy-aws approval", *stage(t, aws, "deploy-production").Approval,
		Approval{Required: true, Approvers: []string{"platform-team", "backend-lead"}, RequiredApprovers: 1, TimeoutHours: 24})
	check(t, "deploy-aws s3-sync with", step(t, stage(t, aws, "deploy-static"), "s3-sync").With,
		map[string]any{"source": "dist/", "bucket": "myapp-static-prod", "delete": true})

	ml := parsed["python-ml/.oxide-ci/pipeline.yaml"]
	check(t, "python-ml schedule", ml.Triggers[1], Trigger{Pos: Pos{11, 5}, Type: TriggerCron, Cron: "0 2 * * 1"})
	check(t, "python-ml environment", ml.Environment.Type, EnvNix)
	check(t, "python-ml train timeout", step(t, stage(t, ml, "train"), "train-model").Timeout, 2*time.Hour)
	check(t, "python-ml train vcpus", stage(t, ml, "train").Environment.Firecracker.VCPUCount, 8)

	check(t, "node-api CI variable", step(t, stage(t, parsed["node-api/.oxide-ci/pipeline.yaml"], "quality"), "test").Variables,
		Vars{{Name: "CI", Value: "true", Pos: Pos{46, 11}}})

	ref := parsed["pipeline.yaml"]
	check(t, "pipeline.yaml timeout", ref.Timeout, 45*time.Minute)
	check(t, "pipeline.yaml retry", *step(t, stage(t, ref, "test"), "test").Retry,
		Retry{MaxAttempts: 2, Delay: 10 * time.Second, ExponentialBackoff: true, RetryOn: []string{"failure"}})
	check(t, "pipeline.yaml secret", stage(t, ref, "deploy-staging").Secrets[0], SecretRef{
		Pos: Pos{163, 9}, Name: "AWS_ACCESS_KEY_ID", Provider: "oxide", Path: "aws/staging", Key: "access_key_id", Masked: true, Required: true,
	})
}

func TestParseNormalizes(t *testing.T) {
	const src = `version: 1.0
name: norm
x-common: &common
  env: {LEVEL: 3, DEBUG: true}
triggers:
  - manual
  - cron: "0 2 * * *"
  - pull_request: {branches: [main], paths_ignore: [docs/**]}
  - type: push
    tags: [v*]
stages:
  - name: build
    <<: *common
    timeout: 90
    matrix:
      go: ["1.22", 1.23, true]
    environment:
      nix: {packages: [go]}
    steps:
      - name: compile
        uses: go-build@v1
        with: {flags: [-race], level: !!str 3, nested: {a: null}}
        timeout: 10m
        continue_on_error: ${{ matrix.go == '1.22' }}
        condition: {if: "success()", unless: "branch == 'x'"}
        retry: {max_attempts: 3}
  - name: test
    needs: build
    condition: ${{ always() }}
    steps:
      - name: t
        id: unit
        run: go test
        timeout_minutes: 5
        continue_on_error: true
        secrets: [{name: TOKEN, source: {provider: environment}, masked: false}]
  - name: lint
    depends_on: []
    environment: {container: {image: "golang:1.23"}}
    steps:
      - name: l
        run: echo ${{ steps.unit.outputs.x }}
`
	p, err := Parse("norm.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	check(t, "version", p.Version, "1.0")
	check(t, "pipeline timeout", p.Timeout, 60*time.Minute)
	check(t, "triggers", p.Triggers, []Trigger{
		{Pos: Pos{6, 5}, Type: TriggerManual},
		{Pos: Pos{7, 5}, Type: TriggerCron, Cron: "0 2 * * *"},
		{Pos: Pos{8, 5}, Type: TriggerPullRequest, Branches: []string{"main"}, PathsIgnore: []string{"docs/**"}},
		{Pos: Pos{9, 5}, Type: TriggerPush, Tags: []string{"v*"}},
	})

	build := stage(t, p, "build")
	check(t, "build variables", build.Variables, Vars{{"LEVEL", "3", Pos{4, 9}}, {"DEBUG", "true", Pos{4, 19}}})
	check(t, "build timeout", build.Timeout, 90*time.Second)
	check(t, "build HasDependsOn", build.HasDependsOn, false)
	check(t, "build matrix", *build.Matrix, Matrix{
		Pos:        Pos{16, 7},
		Dimensions: []Dimension{{Name: "go", Values: []any{"1.22", 1.23, true}}},
		FailFast:   true,
	})
	check(t, "build environment", build.Environment.Type, EnvNix)

	compile := step(t, build, "compile")
	check(t, "compile id", compile.ID, "compile")
	check(t, "compile plugin", compile.Plugin, "go-build@v1")
	check(t, "compile with", compile.With, map[string]any{"flags": []any{"-race"}, "level": "3", "nested": map[string]any{"a": nil}})
	check(t, "compile timeout", compile.Timeout, 10*time.Minute)
	check(t, "compile continue_on_error", compile.ContinueOnError, "${{ matrix.go == '1.22' }}")
	check(t, "compile condition", *compile.Condition, Condition{Pos: Pos{25, 21}, If: "success()", Unless: "branch == 'x'"})
	check(t, "compile retry", *compile.Retry, Retry{MaxAttempts: 3, Delay: 10 * time.Second, ExponentialBackoff: true, RetryOn: []string{"failure"}})

	test := stage(t, p, "test")
	check(t, "test depends_on", test.DependsOn, []string{"build"})
	check(t, "test depends_on positions", test.DependsOnPos, []Pos{{28, 12}})
	check(t, "test condition", test.Condition.If, "${{ always() }}")
	unit := step(t, test, "t")
	check(t, "t id", unit.ID, "unit")
	check(t, "t timeout", unit.Timeout, 5*time.Minute)
	check(t, "t continue_on_error", unit.ContinueOnError, "true")
	check(t, "t secrets", unit.Secrets, []SecretRef{{Pos: Pos{36, 20}, Name: "TOKEN", Provider: "environment", Required: true}})

	lint := stage(t, p, "lint")
	check(t, "lint HasDependsOn", lint.HasDependsOn, true)
	check(t, "lint depends_on", len(lint.DependsOn), 0)
	check(t, "lint environment", *lint.Environment, Environment{Type: EnvContainer, Container: &Container{Image: "golang:1.23"}})
	check(t, "l timeout", step(t, lint, "l").Timeout, 30*time.Minute)
	check(t, "l continue_on_error", step(t, lint, "l").ContinueOnError, "false")
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{{
		name: "unknown key",
		src: `version: "1"
name: t
stages:
  - name: a
    depnds_on: []
    steps:
      - name: s
        run: x
`,
		want: `t.yaml:5:5: unknown key "depnds_on" in stage; did you mean "depends_on"?`,
	}, {
		name: "wrong type",
		src: `version: "1"
name: t
stages:
  - name: a
    steps:
      - name: s
        run: x
        outputs: out
`,
		want: `t.yaml:8:18: outputs: expected a list, got a string`,
	}, {
		name: "required approvers out of range",
		src: `version: "1"
name: t
stages:
  - name: a
    approval: {required: true, required_approvers: 0}
    steps: [{name: s, run: x}]
`,
		want: `t.yaml:5:52: required_approvers must be between 1 and 100, got 0`,
	}, {
		name: "duplicate stage",
		src: `version: "1"
name: t
stages:
  - name: a
    steps: [{name: s, run: x}]
  - name: a
    steps: [{name: s, run: x}]
`,
		want: `t.yaml:6:5: duplicate stage name "a" (first at 4:5)`,
	}, {
		name: "unknown needs",
		src: `version: "1"
name: t
stages:
  - name: build
    steps: [{name: s, run: x}]
  - name: deploy
    needs: biuld
    steps: [{name: t, run: x}]
`,
		want: `t.yaml:7:12: stage "deploy" depends on unknown stage "biuld"; did you mean "build"?`,
	}, {
		name: "cycle through an implicit dependency",
		src: `version: "1"
name: t
stages:
  - name: a
    needs: [c]
    steps: [{name: s, run: x}]
  - name: b
    steps: [{name: t, run: x}]
  - name: c
    depends_on: [b]
    steps: [{name: u, run: x}]
`,
		want: `t.yaml:4:5: dependency cycle: a -> c -> b -> a`,
	}, {
		name: "run and plugin",
		src: `version: "1"
name: t
stages:
  - name: a
    steps:
      - name: both
        run: make
        uses: docker-build@v1
      - name: neither
        shell: bash
`,
		want: `t.yaml:6:9: step "both" has both run and plugin; give one of them
t.yaml:9:9: step "neither" needs run or plugin`,
	}, {
		name: "cron",
		src: `version: "1"
name: t
triggers:
  - schedule: {cron: "0 25 * * *"}
  - type: cron
    cron: "@nightly"
    timezone: Mars/Olympus
  - cron: "@daily"
  - cron
stages:
  - name: a
    steps: [{name: s, run: x}]
`,
		want: `t.yaml:4:22: invalid cron expression "0 25 * * *": end of range (25) above maximum (23): 25
t.yaml:6:11: invalid cron expression "@nightly": unrecognized descriptor: @nightly
t.yaml:7:15: unknown timezone "Mars/Olympus"
t.yaml:9:5: a cron trigger needs a cron expression`,
	}, {
		name: "expressions",
		src: `version: "1"
name: t
stages:
  - name: a
    condition: branch == 'main' &&
    steps:
      - name: s
        run: echo ${{ github.sha == }}
      - name: t
        run: |
          echo start
            echo ${{ format('{0}', ) }}
      - name: u
        run: "echo ${{ sha }} ${{ 'unterminated }}"
`,
		want: `t.yaml:5:35: invalid expression: unexpected end of expression
t.yaml:8:36: invalid expression: unexpected end of expression
t.yaml:12:36: invalid expression: unexpected ")"
t.yaml:14:35: invalid expression: unterminated string`,
	}, {
		name: "matrix references",
		src: `version: "1"
name: t
stages:
  - name: build
    matrix:
      os: [linux, macos]
      include:
        - os: linux
          target: musl
    steps:
      - name: s
        run: make ${{ matrix.os }} ${{ matrix.target }} ${{ matrix.tagret }}
  - name: publish
    steps:
      - name: p
        run: upload ${{ matrix.os }}
`,
		want: `t.yaml:12:61: unknown matrix key "tagret" in stage "build"; did you mean "target"?
t.yaml:16:25: matrix.os: stage "publish" has no matrix`,
	}, {
		name: "expression contexts",
		src: `version: "1"
name: t
variables:
  REGISTRY: ghcr.io
  TAG: ${{ github.sha }}
concurrency:
  group: deploy-${{ github.ref_name }}
stages:
  - name: build
    variables: {OS: linux}
    condition: github.event_name == 'push' && !job.status
    environment:
      container: {image: "${{ REGISTRY }}/b:${{ vars.V }}"}
    steps:
      - name: s
        env: {STEP_VAR: x}
        run: |
          echo ${{ sha }} ${{ runner.os }} ${{ OS }} ${{ STEP_VAR }} ${{ variables.ANY }} ${{ secrets.T }}
          echo ${{ env.HOME }} ${{ inputs.version }} ${{ needs.build.outputs.x }}
        working_directory: ${{ github.workspace }}
      - name: u
        uses: p@v1
        with: {ref: "${{ github.head_ref }}", id: "${{ github.run_id }}", tag: "${{ REGISTY }}"}
        continue_on_error: ${{ runner.tmp || rn_id }}
  - name: test
    steps:
      - name: t
        condition: {unless: "contains(fromJSON(STEP_VAR), OS) || hashFiles('x')"}
        run: echo ${{ steps.s.outputs.v }} ${{ steps.sx.outputs.w }} ${{ stesp.s }} ${{ github.ref }}
`,
		want: "t.yaml:5:12: unknown context `github`; Oxide's is `sha`\n" +
			"t.yaml:7:21: unknown context `github`; Oxide's is `branch`\n" +
			"t.yaml:11:16: unknown context `github`; Oxide's is `event`\n" +
			"t.yaml:11:48: unknown context `job`: a job's status is success(), failure() or cancelled()\n" +
			"t.yaml:13:49: unknown context `vars`; Oxide's is `variables`: ${{ variables.V }}\n" +
			"t.yaml:19:20: `env` is not an expression context: use $HOME in run, or ${{ variables.HOME }}\n" +
			"t.yaml:19:36: unknown context `inputs`: a pipeline has no inputs; use ${{ variables.version }}, set with --var or a trigger's variables\n" +
			"t.yaml:19:58: unknown context `needs`: read an earlier stage's outputs as ${{ steps.<id>.outputs.<key> }}\n" +
			"t.yaml:20:32: unknown context `github`; Oxide's are `branch`, `ref`, `sha`, `event` and `run_id`\n" +
			"t.yaml:23:26: unknown context `github`; Oxide's is `branch`\n" +
			"t.yaml:23:56: unknown context `github`; Oxide's is `run_id`\n" +
			"t.yaml:23:85: unknown context or variable `REGISTY`; did you mean \"REGISTRY\"?\n" +
			"t.yaml:24:32: unknown property runner.tmp; runner has os, arch and name\n" +
			"t.yaml:24:46: unknown context or variable `rn_id`; did you mean \"run_id\"?\n" +
			"t.yaml:28:48: unknown context or variable `STEP_VAR`: the contexts are branch, event, matrix, ref, run_id, runner, secrets, sha, steps, variables; a variable must be defined under variables\n" +
			"t.yaml:28:59: unknown context or variable `OS`: the contexts are branch, event, matrix, ref, run_id, runner, secrets, sha, steps, variables; a variable must be defined under variables\n" +
			"t.yaml:29:48: steps.sx: unknown step id \"sx\"\n" +
			"t.yaml:29:74: unknown context or variable `stesp`; did you mean \"steps\"?\n" +
			"t.yaml:29:89: unknown context `github`; Oxide's is `ref`",
	}, {
		name: "concurrency group",
		src: `version: "1"
name: t
variables: {ENV: prod}
concurrency: {group: "${{ ENV }}-${{ branch }}-${{ matrix.os }}-${{ event }}"}
stages:
  - name: a
    steps: [{name: s, run: x}]
`,
		want: "t.yaml:4:27: `ENV` is not known when a run is triggered: this value sees only branch, ref, sha, event\n" +
			"t.yaml:4:52: `matrix` is not known when a run is triggered: this value sees only branch, ref, sha, event",
	}, {
		name: "YAML syntax",
		src: `version: "1"
name: t
stages:
  - name: a
    steps: [{name: s, run: x}
`,
		want: `t.yaml:5:12: invalid YAML: sequence end token ']' not found`,
	}, {
		name: "many at once",
		src: `version: "2"
name: t
triggers:
  - pusj: {branches: [main]}
stages:
  - name: build
    needs: []
    timeout: 10m
    timeout_minutes: 10
    environment:
      type: container
    secrets:
      - name: TOKEN
        source: {path: ci/token}
    steps:
      - name: compile
        run: make
        shell: zsh
        retry: {max_attempts: 0}
        continue_on_error: sometimes
      - name: compile
        id: cc
        run: make
  - name: test
    needs: build
    steps: []
  - name: deploy
    needs: [deploy]
    steps:
      - name: d
        id: cc
        run: ./deploy ${{ steps.compile.outputs.v }} ${{ steps.cc.outputs.x }} ${{ steps.missing.outputs.y }}
`,
		want: `t.yaml:1:10: unsupported version "2"; want "1" or "1.0"
t.yaml:4:5: unknown trigger type "pusj"; did you mean "push"?
t.yaml:8:5: "timeout" is an alias of "timeout_minutes"; give only one of them
t.yaml:11:7: a container environment needs container.image
t.yaml:14:18: missing required key "provider" in secret source
t.yaml:18:16: invalid shell "zsh"; want one of bash, sh, python, powershell, pwsh; did you mean "sh"?
t.yaml:19:31: max_attempts must be between 1 and 10, got 0
t.yaml:20:28: continue_on_error: expected a boolean or a ${{ }} expression, got "sometimes"
t.yaml:21:9: duplicate step name "compile" in stage "build" (first at 16:9)
t.yaml:26:12: stage "test" has no steps
t.yaml:28:13: stage "deploy" depends on itself
t.yaml:30:9: duplicate step id "cc" (first at 21:9)
t.yaml:32:58: steps.cc is ambiguous: stages "build", "deploy" each have a step with id "cc"; give the steps distinct ids
t.yaml:32:84: steps.missing: unknown step id "missing"`,
	}, {
		name: "types and required keys",
		src: `version: "1"
name: t
variables:
  A: [1, 2]
  B: 3
stages:
  - name: a
    parallel: "yes"
    steps: {name: s}
  - display_name: no name
    steps:
      - run: x
  - name: c
    matrix:
      dimensions: {os: linux}
      fail_fats: false
    steps:
      - name: s
        plugin: p
        with: [1]
        timeout_minutes: 1.5
`,
		want: `t.yaml:4:6: variable "A": expected a string, number or boolean, got a list
t.yaml:8:15: parallel: expected a boolean, got a string
t.yaml:9:13: steps: expected a list, got a mapping
t.yaml:10:5: missing required key "name" in stage
t.yaml:12:9: missing required key "name" in step
t.yaml:15:24: os: expected a list, got a string
t.yaml:16:7: unknown key "fail_fats" in matrix; did you mean "fail_fast"?
t.yaml:20:15: with: expected a mapping, got a list
t.yaml:21:26: timeout_minutes: expected an integer, got a number`,
	}, {
		name: "aliases",
		src: `version: "1"
name: t
x-steps: &steps
  - name: s
    run: ${{ matrix.os }}
    shel: bash
stages:
  - name: a
    steps: *steps
  - name: b
    steps: *steps
  - name: c
    steps:
      - name: u
        run: ${{ steps.s.outputs.v }}
        env: *undefined
`,
		want: `t.yaml:5:14: matrix.os: stage "a" has no matrix
t.yaml:5:14: matrix.os: stage "b" has no matrix
t.yaml:6:5: unknown key "shel" in step; did you mean "shell"?
t.yaml:15:18: steps.s is ambiguous: stages "a", "b" each have a step with id "s"; give the steps distinct ids
t.yaml:16:14: undefined alias *undefined`,
	}, {
		name: "keys of other CI systems",
		src: `version: "1"
name: t
stages:
  - name: a
    needs: []
    depends_on: []
    steps:
      - name: s
        id: 2nd-step
        if: success()
        run: x
`,
		want: `t.yaml:5:5: "needs" is an alias of "depends_on"; give only one of them
t.yaml:9:13: invalid step id "2nd-step": use letters, digits, '_' and '-', starting with a letter or '_'
t.yaml:10:9: unknown key "if" in step; did you mean "condition"?`,
	}, {
		name: "alias bomb",
		src: `a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
`,
		want: `t.yaml:1:1: the document is too large once its aliases are expanded`,
	}, {
		name: "empty",
		src:  "# nothing\n",
		want: `t.yaml:1:1: the pipeline definition is empty`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("t.yaml", []byte(tt.src))
			if p != nil {
				t.Errorf("Parse returned a pipeline with its error")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Parse error = %v (%T), want an ErrorList", err, err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("Parse errors:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if _, err := Load(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
	if err := os.WriteFile(path, []byte("version: 1\nname: x\nstages: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + ":3:9: stages: a pipeline needs at least one stage"; err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
}

func TestWarnings(t *testing.T) {
	const src = `version: "1"
name: w
triggers:
  - push: {branches: [main]}
cache: {paths: [target], key: k}
artifacts: {paths: [dist]}
stages:
  - name: build
    environment: {nix: {packages: [go]}}
    cache: {paths: [node_modules], key: k}
    artifacts: {paths: [out]}
    retry: {max_attempts: 2}
    agent: {labels: [linux], name: builder-1}
    approval: {required: true, approvers: [ops], timeout_hours: 2}
    secrets:
      - name: TOKEN
        source: {provider: vault, path: ci/token, version: "3"}
      - name: OTHER
        source: {provider: oxide}
    steps:
      - name: checkout
        uses: oxide/checkout@v1
      - name: ps
        shell: pwsh
        run: Write-Host hi
        environment: {type: host}
        outputs: [x]
  - name: deploy
    environment:
      container:
        image: app
        shell: powershell
        registry: {url: x.dkr.ecr.aws, aws_ecr: true, gcp_gcr: false}
        resources: {cpu: "2", disk: 10Gi, gpu: {count: 1, vendor: nvidia, driver_version: "535"}}
    steps:
      - name: d
        run: ./deploy
  - name: vm
    environment: {type: firecracker, firecracker: {kernel: k, rootfs: r}}
    steps:
      - name: v
        plugin: oxide/approval-gate@v1
`
	p, err := Parse("w.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range p.Warnings {
		got = append(got, w.String())
	}
	want := []string{
		"w.yaml:3:1: warning: triggers are not matched yet: a run starts only when asked for (oxide run, or the server's API)",
		"w.yaml:5:1: warning: cache is not supported yet: nothing is restored or saved",
		"w.yaml:6:1: warning: artifacts are not supported yet: nothing is uploaded or kept",
		"w.yaml:9:19: warning: nix environments are not available yet: no agent provides one; oxide run --environment host runs the steps on this machine",
		"w.yaml:10:5: warning: cache is not supported yet: nothing is restored or saved",
		"w.yaml:11:5: warning: artifacts are not supported yet: nothing is uploaded or kept",
		"w.yaml:13:30: warning: agent.name is not supported yet: select agents with agent.labels",
		"w.yaml:17:28: warning: secret provider vault is not available yet: on a server the stage fails; oxide run takes TOKEN from --secret TOKEN=… or --secrets-file",
		"w.yaml:17:51: warning: secret versions are not supported yet: the current value is used",
		"w.yaml:22:9: warning: plugin steps are not available yet: the step fails when it runs (oxide/checkout@v1)",
		"w.yaml:24:16: warning: shell pwsh is not supported yet: steps run with bash, sh or python",
		"w.yaml:26:9: warning: a step's environment is not supported yet: the step runs in its stage's environment",
		"w.yaml:32:16: warning: shell powershell is not supported yet: steps run with bash, sh or python",
		"w.yaml:33:40: warning: registry.aws_ecr logins are not supported yet: give username and password_secret",
		"w.yaml:34:31: warning: resources.disk is not supported yet: the disk is not limited",
		"w.yaml:34:59: warning: gpu.vendor is not supported yet: any GPU the engine offers is used",
		"w.yaml:34:75: warning: gpu.driver_version is not supported yet: it is not checked",
		"w.yaml:39:19: warning: firecracker environments are not available yet: no agent provides one; oxide run --environment host runs the steps on this machine",
		"w.yaml:42:9: warning: plugin steps are not available yet: the step fails when it runs (oxide/approval-gate@v1)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestWarningsThroughAliases checks that content used twice through an
// alias is warned about once.
func TestWarningsThroughAliases(t *testing.T) {
	const src = `version: "1"
name: a
x-steps: &steps
  - name: checkout
    uses: oxide/checkout@v1
stages:
  - name: a
    steps: *steps
  - name: b
    steps: *steps
`
	p, err := Parse("a.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Warning{{File: "a.yaml", Pos: Pos{5, 5}, Msg: "plugin steps are not available yet: the step fails when it runs (oxide/checkout@v1)"}}
	check(t, "warnings", p.Warnings, want)
}

// TestNoWarnings checks that what works is not warned about.
func TestNoWarnings(t *testing.T) {
	const src = `version: "1"
name: quiet
description: nothing here is unsupported
concurrency: {group: "deploy-${{ branch }}"}
stages:
  - name: build
    display_name: Build it
    agent: {labels: [linux]}
    secrets:
      - name: TOKEN
        source: {provider: environment}
    environment:
      container:
        image: app
        shell: sh
        registry: {url: r, username: u, password_secret: P, aws_ecr: false}
        resources: {cpu: "2", memory: 1Gi, gpu: {count: 1}}
    steps:
      - name: s
        shell: python
        run: print(1)
        retry: {max_attempts: 2}
        outputs: [x]
`
	p, err := Parse("q.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) > 0 {
		t.Errorf("warnings: %v", p.Warnings)
	}
}
