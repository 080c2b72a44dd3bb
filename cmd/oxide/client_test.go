package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/oxide-ci/oxide/sdk"
)

// These tests run the client commands in-process against fakeServer. They
// set environment variables, so they do not run in parallel.

// result is what one oxide command did.
type result struct {
	stdout, stderr string
	code           int
}

// oxide runs the oxide command line args with stdin, as main does but
// capturing output.
func oxide(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	r := result{}
	if err := root.Execute(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			r.code = ee.code
			if ee.err != nil {
				fmt.Fprintln(&errb, "oxide:", ee.err)
			}
		} else {
			r.code = exitUsage
			fmt.Fprintln(&errb, "oxide:", err)
		}
	}
	r.stdout, r.stderr = out.String(), errb.String()
	return r
}

// must fails the test unless r exited with code.
func (r result) must(t *testing.T, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

// has fails the test unless s matches the regular expression re.
func has(t *testing.T, what, s, re string) {
	t.Helper()
	if !regexp.MustCompile(re).MatchString(s) {
		t.Errorf("%s does not match %q:\n%s", what, re, s)
	}
}

// clientEnv gives the test its own config directory and home, and sets
// OXIDE_SERVER and OXIDE_TOKEN (empty: unset). It returns the config file's
// path.
func clientEnv(t *testing.T, server, token string) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv(envServer, server)
	t.Setenv(envToken, token)
	return filepath.Join(dir, "config", "oxide", "config.json")
}

// inTempDir runs the test in a fresh directory holding files.
func inTempDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	return dir
}

func TestConfigResolution(t *testing.T) {
	tests := []struct {
		name             string
		envServer        string
		envToken         string
		file             *userConfig
		xdgUnset         bool
		server, token    string
		serverFrom, from string // "env", "file" or ""
	}{
		{name: "nothing"},
		{name: "environment", envServer: "http://env", envToken: "oxt_env", server: "http://env", token: "oxt_env", serverFrom: "env", from: "env"},
		{name: "file", file: &userConfig{Server: "http://file", Token: "oxt_file"}, server: "http://file", token: "oxt_file", serverFrom: "file", from: "file"},
		{name: "file under HOME without XDG_CONFIG_HOME", xdgUnset: true, file: &userConfig{Server: "http://home"}, server: "http://home", serverFrom: "file"},
		{
			name: "environment before file, key by key", envServer: "http://env", file: &userConfig{Server: "http://file", Token: "oxt_file"},
			server: "http://env", token: "oxt_file", serverFrom: "env", from: "file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := clientEnv(t, tt.envServer, tt.envToken)
			if tt.xdgUnset {
				t.Setenv("XDG_CONFIG_HOME", "")
				path = filepath.Join(os.Getenv("HOME"), ".config", "oxide", "config.json")
			}
			if got, _ := configPath(); got != path {
				t.Fatalf("configPath() = %s, want %s", got, path)
			}
			if tt.file != nil {
				if _, err := saveConfig(*tt.file); err != nil {
					t.Fatal(err)
				}
			}
			s, err := resolveSettings()
			if err != nil {
				t.Fatal(err)
			}
			from := func(kind string) string {
				switch kind {
				case "env":
					return "OXIDE_"
				case "file":
					return path
				}
				return ""
			}
			if s.Server != tt.server || s.Token != tt.token || !strings.HasPrefix(s.ServerFrom, from(tt.serverFrom)) || !strings.HasPrefix(s.TokenFrom, from(tt.from)) {
				t.Errorf("got %+v", s)
			}
			out := oxide(t, "", "config").must(t, 0).stdout
			if tt.server != "" {
				has(t, "oxide config", out, `server\s+`+regexp.QuoteMeta(tt.server)+`\s+from `)
			} else {
				has(t, "oxide config", out, `server\s+\(not set\)`)
			}
			if strings.Contains(out, "oxt_file") || strings.Contains(out, "oxt_env") {
				t.Errorf("oxide config shows the whole token:\n%s", out)
			}
		})
	}
}

func TestConfigCommands(t *testing.T) {
	path := clientEnv(t, "", "")
	if got := oxide(t, "", "config", "path").must(t, 0).stdout; got != path+"\n" {
		t.Errorf("config path: %q, want %q", got, path)
	}
	oxide(t, "", "config", "get", "server").must(t, 1)
	oxide(t, "", "config", "set", "server", "http://example.com:8080").must(t, 0)
	oxide(t, "", "config", "set", "token", "oxt_123").must(t, 0)
	if got := oxide(t, "", "config", "get", "server").must(t, 0).stdout; got != "http://example.com:8080\n" {
		t.Errorf("config get server: %q", got)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config file mode %v, want 0600", fi.Mode().Perm())
	}
	var c userConfig
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &c); err != nil || c != (userConfig{Server: "http://example.com:8080", Token: "oxt_123"}) {
		t.Errorf("config file %s: %v", b, err)
	}
	r := oxide(t, "", "config", "set", "colour", "red").must(t, exitUsage)
	has(t, "stderr", r.stderr, `unknown config key "colour"`)
}

func TestLogin(t *testing.T) {
	f := newFake(t)
	path := clientEnv(t, "", "")

	r := oxide(t, "", "login", "--server", f.URL, "--token", "oxt_wrong").must(t, 1)
	has(t, "stderr", r.stderr, "rejected the token")
	if _, err := os.Stat(path); err == nil {
		t.Error("a rejected login wrote the config file")
	}

	r = oxide(t, "", "login", "--server", f.URL+"/", "--token", fakeToken).must(t, 0)
	has(t, "stdout", r.stdout, "logged in to "+regexp.QuoteMeta(f.URL)+"; saved in "+regexp.QuoteMeta(path))
	if got := f.requests(); !reflect.DeepEqual(got[len(got)-1:], []string{"GET /api/v1/pipelines?limit=1"}) {
		t.Errorf("requests %q", got)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, %v", fi, err)
	}
	s, _ := resolveSettings()
	if s.Server != f.URL || s.Token != fakeToken {
		t.Errorf("settings after login %+v", s)
	}
	// The stored settings serve the next commands.
	oxide(t, "", "pipelines", "list").must(t, 0)

	// The token from stdin.
	clientEnv(t, "", "")
	oxide(t, fakeToken+"\n", "login", "--server", f.URL, "--token", "-").must(t, 0)

	oxide(t, "", "login", "--token", "x").must(t, exitUsage)
	oxide(t, "", "login", "--server", "example.com", "--token", "x").must(t, exitUsage)
	r = oxide(t, "", "login", "--server", "http://127.0.0.1:1", "--token", "x").must(t, 1)
	has(t, "stderr", r.stderr, "does not answer")
}

func TestNoServer(t *testing.T) {
	clientEnv(t, "", "")
	for _, args := range [][]string{{"pipelines", "list"}, {"logs", "r1"}, {"cancel", "r1"}, {"jobs", "list"}, {"secrets", "list"}, {"run", "--pipeline", "x"}} {
		r := oxide(t, "", args...).must(t, exitUsage)
		has(t, strings.Join(args, " "), r.stderr, "no server configured|needs a server")
	}
}

func TestRemoteRunDecision(t *testing.T) {
	tests := []struct {
		name       string
		configured string // OXIDE_SERVER
		args       []string
		remote     bool
		server     string // the --server URL taken
		rest       []string
		usage      bool
	}{
		{name: "nothing configured runs here", args: []string{"p.yaml"}, rest: []string{"p.yaml"}},
		{name: "a configured server", configured: "http://s", args: []string{"p.yaml"}, remote: true, rest: []string{"p.yaml"}},
		{name: "--local wins", configured: "http://s", args: []string{"--local", "p.yaml"}, rest: []string{"p.yaml"}},
		{name: "--server alone", args: []string{"--server", "p.yaml"}, remote: true, rest: []string{"p.yaml"}},
		{name: "--server=URL", args: []string{"--server=http://x", "p.yaml"}, remote: true, server: "http://x", rest: []string{"p.yaml"}},
		{name: "--server URL", args: []string{"--server", "https://x:8080", "p.yaml"}, remote: true, server: "https://x:8080", rest: []string{"p.yaml"}},
		{name: "--server URL, no file", args: []string{"--server", "http://x"}, remote: true, server: "http://x", rest: []string{}},
		{name: "--local and --server", args: []string{"--local", "--server"}, usage: true},
		{name: "two files", args: []string{"a.yaml", "b.yaml"}, usage: true},
		{name: "--pipeline without a server", args: []string{"--pipeline", "x"}, usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clientEnv(t, tt.configured, "")
			cmd := newRunCmd()
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			var f runFlags
			// newRunCmd's flags are bound to its own runFlags: read them back.
			fl := cmd.Flags()
			f.local, _ = fl.GetBool("local")
			f.server, _ = fl.GetString("server")
			f.pipeline, _ = fl.GetString("pipeline")
			args := fl.Args()
			remote, err := remoteRun(cmd, &f, &args)
			if tt.usage {
				var ee *exitError
				if !errors.As(err, &ee) || ee.code != exitUsage {
					t.Fatalf("error %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if remote != tt.remote || f.server != tt.server || !reflect.DeepEqual(args, tt.rest) {
				t.Errorf("remote %v, server %q, args %q", remote, f.server, args)
			}
		})
	}
}

const helloPipeline = `version: "1"
name: hello
stages:
  - name: build
    steps:
      - name: hello
        run: echo hello
`

func TestRunOnServer(t *testing.T) {
	f := newFake(t)
	clientEnv(t, "", fakeToken)
	inTempDir(t, map[string]string{
		"pipeline.yaml": helloPipeline,
		"failing.yaml":  strings.Replace(helloPipeline, "name: hello", "name: failing", 1),
		"invalid.yaml":  "# server-invalid\n" + helloPipeline,
	})

	// --server URL with a space: the pipeline is created, then triggered.
	r := oxide(t, "", "run", "--server", f.URL, "--branch", "dev", "--sha", "abc123", "--var", "K=V", "pipeline.yaml").must(t, 0)
	has(t, "stdout", r.stdout, `^hello #1: run r\d+ queued\n$`)
	if strings.Contains(r.stderr, "the fake warns") {
		t.Errorf("stderr %q: a file's warnings are printed from the file, not again from the server", r.stderr)
	}
	want := []string{"GET /api/v1/pipelines/hello", "POST /api/v1/pipelines", "POST /api/v1/pipelines/p1/runs"}
	if got := f.requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests\n got %q\nwant %q", got, want)
	}
	var trig map[string]any
	json.Unmarshal([]byte(f.body("POST /api/v1/pipelines/p1/runs")), &trig)
	wantTrig := map[string]any{"branch": "dev", "ref": "refs/heads/dev", "sha": "abc123", "variables": map[string]any{"K": "V"}}
	if !reflect.DeepEqual(trig, wantTrig) {
		t.Errorf("trigger body %v, want %v (no event unless --event)", trig, wantTrig)
	}
	var created sdk.CreatePipelineRequest
	json.Unmarshal([]byte(f.body("POST /api/v1/pipelines")), &created)
	if created.Name != "hello" || created.Definition != helloPipeline {
		t.Errorf("created %+v", created)
	}

	// A configured server: the unchanged pipeline is not stored again.
	t.Setenv(envServer, f.URL)
	oxide(t, "", "run", "--event", "manual", "pipeline.yaml").must(t, 0)
	want = []string{"GET /api/v1/pipelines/hello", "POST /api/v1/pipelines/p1/runs"}
	if got := f.requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests\n got %q\nwant %q", got, want)
	}
	has(t, "trigger body", f.body("POST /api/v1/pipelines/p1/runs"), `"event":"manual"`)

	// A changed one is updated.
	os.WriteFile("pipeline.yaml", []byte(helloPipeline+"  - name: more\n    steps:\n      - name: more\n        run: echo more\n"), 0o644)
	oxide(t, "", "run", "pipeline.yaml").must(t, 0)
	if got := f.requests(); len(got) != 3 || got[1] != "PUT /api/v1/pipelines/p1" {
		t.Errorf("requests %q, want an update", got)
	}

	// --wait exits by the run's status.
	r = oxide(t, "", "run", "--wait", "pipeline.yaml").must(t, 0)
	has(t, "stdout", r.stdout, `(?s)hello #4: run r\d+ queued\n.*✓ build\s+success.*✓ hello\s+success\n\nRun success in .*: hello #4`)
	r = oxide(t, "", "run", "--wait", "failing.yaml").must(t, 1)
	has(t, "stdout", r.stdout, `✗ build\s+failure: step hello failed`)
	has(t, "stdout", r.stdout, `✗ hello\s+failure \(exit 3\)`)
	has(t, "stdout", r.stdout, `Run failure`)

	// --watch streams the output as a local run prints it.
	r = oxide(t, "", "run", "--watch", "pipeline.yaml").must(t, 0)
	has(t, "stdout", r.stdout, `(?s)queued\n\[build/hello\] hello from the fake\n\[build/hello\] bye\n.*Run success`)
	r = oxide(t, "", "run", "--watch", "-o", "json", "failing.yaml").must(t, 1)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var last sdk.Run
	if len(lines) != 3 || json.Unmarshal([]byte(lines[2]), &last) != nil || last.Status != sdk.RunFailure {
		t.Errorf("--watch -o json: want 2 log lines and the run, got\n%s", r.stdout)
	}

	// --pipeline runs a stored pipeline without a file.
	f.requests()
	r = oxide(t, "", "run", "--pipeline", "hello").must(t, 0)
	if got := f.requests(); !reflect.DeepEqual(got, []string{"POST /api/v1/pipelines/hello/runs"}) {
		t.Errorf("requests %q", got)
	}
	has(t, "stderr", r.stderr, `^pipeline.yaml:1:1: warning: the fake warns\n$`)
	r = oxide(t, "", "run", "--pipeline", "nope").must(t, 1)
	has(t, "stderr", r.stderr, `no such pipeline \(not_found\)`)

	// Problems.
	r = oxide(t, "", "run", "invalid.yaml").must(t, exitUsage)
	has(t, "stderr", r.stderr, `pipeline definition is invalid \(invalid_pipeline\):\n  pipeline.yaml:1:1: the server says no`)
	r = oxide(t, "", "run", "--secret", "A=B", "pipeline.yaml").must(t, exitUsage)
	has(t, "stderr", r.stderr, "--secret is for local runs")
	oxide(t, "", "run", "--pipeline", "hello", "pipeline.yaml").must(t, exitUsage)
	t.Setenv(envToken, "oxt_wrong")
	r = oxide(t, "", "run", "pipeline.yaml").must(t, 1)
	has(t, "stderr", r.stderr, `(?s)unauthorized.*oxide login`)
}

func TestLogsAndCancel(t *testing.T) {
	f := newFake(t)
	clientEnv(t, f.URL, fakeToken)
	inTempDir(t, map[string]string{"pipeline.yaml": helloPipeline})
	oxide(t, "", "run", "pipeline.yaml").must(t, 0)
	id := "r2" // p1, then r2

	// Nothing yet: the run has not been read, so it has not started.
	if r := oxide(t, "", "logs", id).must(t, 0); r.stdout != "" {
		t.Errorf("logs before the run started: %q", r.stdout)
	}
	r := oxide(t, "", "logs", "-f", id).must(t, 0)
	if r.stdout != "[build/hello] hello from the fake\n[build/hello] bye\n" {
		t.Errorf("logs -f: %q", r.stdout)
	}
	r = oxide(t, "", "logs", "-o", "json", id).must(t, 0)
	var l sdk.LogLine
	if err := json.Unmarshal([]byte(strings.SplitN(r.stdout, "\n", 2)[0]), &l); err != nil || l.Text != "hello from the fake" || l.Seq != 1 {
		t.Errorf("logs -o json: %q (%v)", r.stdout, err)
	}
	r = oxide(t, "", "cancel", id).must(t, 1)
	has(t, "stderr", r.stderr, "is done already")

	oxide(t, "", "run", "pipeline.yaml").must(t, 0)
	r = oxide(t, "", "cancel", "r3").must(t, 0)
	has(t, "stdout", r.stdout, `cancelling hello #2 \(run r3\): cancelled`)
	r = oxide(t, "", "logs", "r404").must(t, 1)
	has(t, "stderr", r.stderr, "no such run")

	r = oxide(t, "", "runs", "get", id).must(t, 0)
	has(t, "stdout", r.stdout, `status:\s+success`)
	r = oxide(t, "", "runs", "list", "hello").must(t, 0)
	has(t, "stdout", r.stdout, `#\s+ID\s+STATUS\s+BRANCH`)
	has(t, "stdout", r.stdout, `2\s+r3\s+cancelled`)
}

func TestPipelinesCommands(t *testing.T) {
	f := newFake(t)
	clientEnv(t, f.URL, fakeToken)
	inTempDir(t, map[string]string{"p.yaml": helloPipeline, "bad.yaml": "version: \"1\"\nname: x\nstagse: []\n"})

	r := oxide(t, "", "pipelines", "create", "--file", "p.yaml").must(t, 0)
	has(t, "stdout", r.stdout, `created pipeline hello \(p1\)`)
	oxide(t, "", "pipelines", "create", "other", "-f", "p.yaml", "--repository", "git@example.com:o/r.git").must(t, 0)
	r = oxide(t, "", "pipelines", "create", "-f", "p.yaml").must(t, 1)
	has(t, "stderr", r.stderr, `exists \(conflict\)`)
	oxide(t, "", "pipelines", "create", "-f", "bad.yaml").must(t, exitUsage)

	r = oxide(t, "", "pipelines", "list").must(t, 0)
	has(t, "stdout", r.stdout, `NAME\s+ID\s+REPOSITORY\s+UPDATED\nhello\s+p1\s+-\s+\d+s\nother\s+p2\s+git@example.com:o/r.git`)
	r = oxide(t, "", "pipelines", "list", "--limit", "1").must(t, 0)
	has(t, "stderr", r.stderr, "more than 1; --all")
	r = oxide(t, "", "pipelines", "list", "--limit", "1", "--all", "-o", "json").must(t, 0)
	var ps []sdk.Pipeline
	if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil || len(ps) != 2 {
		t.Errorf("list --all -o json: %v %s", err, r.stdout)
	}

	r = oxide(t, "", "pipelines", "get", "hello").must(t, 0)
	has(t, "stdout", r.stdout, `(?s)name:\s+hello\nid:\s+p1\n.*\n\nversion: "1"\nname: hello\n`)
	oxide(t, "", "pipelines", "update", "hello", "--name", "hi").must(t, 0)
	if b := f.body("PUT /api/v1/pipelines/hello"); b != `{"name":"hi"}` {
		t.Errorf("update body %s", b)
	}
	oxide(t, "", "pipelines", "update", "hi").must(t, exitUsage)
	oxide(t, "", "pipelines", "delete", "hi").must(t, 0)
	r = oxide(t, "", "pipelines", "get", "hi").must(t, 1)
	has(t, "stderr", r.stderr, `no pipeline "hi" \(not_found\)`)
}

func TestJobsCommands(t *testing.T) {
	f := newFake(t)
	clientEnv(t, f.URL, fakeToken)

	r := oxide(t, "", "jobs", "submit", "-l", "linux", "-l", "gpu", "-p", "7", "-e", "A=1", "--timeout", "5m", "--", "/bin/echo", "hello world", "it's").must(t, 0)
	has(t, "stdout", r.stdout, `submitted job j1 \(echo\): queued`)
	var spec sdk.JobSpec
	json.Unmarshal([]byte(f.body("POST /api/v1/jobs")), &spec)
	want := sdk.JobSpec{Name: "echo", Command: `/bin/echo 'hello world' 'it'\''s'`, Labels: []string{"linux", "gpu"}, Priority: 7, Env: map[string]string{"A": "1"}, Timeout: "5m"}
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("spec\n got %+v\nwant %+v", spec, want)
	}
	oxide(t, "", "jobs", "submit", "--name", "build", "--", "make test && make dist").must(t, 0)
	if b := f.body("POST /api/v1/jobs"); b != `{"name":"build","command":"make test \u0026\u0026 make dist"}` {
		t.Errorf("body %s", b)
	}
	oxide(t, "", "jobs", "submit").must(t, exitUsage)

	r = oxide(t, "", "jobs", "list").must(t, 0)
	has(t, "stdout", r.stdout, `ID\s+NAME\s+STATE\s+ATTEMPT\s+PRIORITY\s+WORKER\s+CREATED\nj1\s+echo\s+queued\s+0/3\s+7\s+-`)
	r = oxide(t, "", "jobs", "get", "j2").must(t, 0)
	has(t, "stdout", r.stdout, `command:\s+make test && make dist`)
	r = oxide(t, "", "jobs", "cancel", "j2").must(t, 0)
	has(t, "stdout", r.stdout, "cancelling job j2 \\(build\\): cancelled")
	r = oxide(t, "", "jobs", "list", "--state", "cancelled", "-o", "json").must(t, 0)
	var jobs []sdk.Job
	if json.Unmarshal([]byte(r.stdout), &jobs) != nil || len(jobs) != 1 || jobs[0].ID != "j2" {
		t.Errorf("jobs list --state: %s", r.stdout)
	}
}

func TestTemplatesCommands(t *testing.T) {
	f := newFake(t)
	clientEnv(t, f.URL, fakeToken)
	inTempDir(t, map[string]string{
		"greet.yaml": `name: greet
description: Say hello
parameters:
  - {name: who, type: string, required: true}
  - {name: times, type: int, default: 1}
  - {name: loud, type: bool}
spec:
  name: greet
  command: "echo {{ .who }} x{{ .times }}"
`,
		"typo.json": `{"name": "x", "parameters": [], "spec": {"name": "x", "comand": "true"}}`,
	})
	r := oxide(t, "", "templates", "create", "-f", "greet.yaml").must(t, 0)
	has(t, "stdout", r.stdout, `created template greet \(t1\)`)
	r = oxide(t, "", "templates", "create", "-f", "typo.json").must(t, exitUsage)
	has(t, "stderr", r.stderr, `unknown field "comand"`)
	oxide(t, "", "templates", "create").must(t, exitUsage)

	r = oxide(t, "", "templates", "instantiate", "greet", "-p", "who=world", "--param", "times=3", "-p", "loud=true").must(t, 0)
	has(t, "stdout", r.stdout, `submitted job j2 \(greet\) from template greet: queued`)
	if b := f.body("POST /api/v1/templates/t1/instantiate"); !jsonSame(b, `{"parameters":{"who":"world","times":3,"loud":true}}`) {
		t.Errorf("instantiate body %s", b)
	}
	r = oxide(t, "", "templates", "instantiate", "greet", "-p", "who=x", "-p", "times=many").must(t, exitUsage)
	has(t, "stderr", r.stderr, `--param times: want an integer`)
	r = oxide(t, "", "templates", "instantiate", "greet").must(t, 1)
	has(t, "stderr", r.stderr, `missing parameter who \(invalid_request\)`)

	r = oxide(t, "", "templates", "get", "greet").must(t, 0)
	has(t, "stdout", r.stdout, `(?s)description:\s+Say hello.*times\s+int\s+false\s+1`)
}

func TestAgentsAndSecrets(t *testing.T) {
	f := newFake(t)
	clientEnv(t, f.URL, fakeToken)

	r := oxide(t, "", "agents", "list").must(t, 0)
	has(t, "stdout", r.stdout, `NAME\s+ID\s+STATUS\s+LABELS\s+CAPACITY\s+VERSION\s+PLATFORM\s+HEARTBEAT\nbuilder-1\s+a1\s+online\s+linux\s+2\s+dev\s+linux/amd64\s+\d+s`)
	r = oxide(t, "", "agents", "drain", "a1").must(t, 0)
	has(t, "stdout", r.stdout, `agent builder-1 \(a1\): draining`)
	oxide(t, "", "agents", "drain", "a9").must(t, 1)

	r = oxide(t, "s3cret\n", "secrets", "set", "API_KEY").must(t, 0)
	has(t, "stdout", r.stdout, "set secret API_KEY")
	if b := f.body("PUT /api/v1/secrets/API_KEY"); b != `{"value":"s3cret"}` {
		t.Errorf("set body %s", b)
	}
	inTempDir(t, map[string]string{"p.yaml": helloPipeline})
	oxide(t, "", "pipelines", "create", "-f", "p.yaml").must(t, 0)
	oxide(t, "", "secrets", "set", "DEPLOY", "--value", "v", "--pipeline", "hello").must(t, 0)
	if b := f.body("PUT /api/v1/secrets/DEPLOY"); !jsonSame(b, `{"value":"v","scope":"pipeline","scope_id":"p1"}`) {
		t.Errorf("set body %s", b)
	}
	r = oxide(t, "", "secrets", "list").must(t, 0)
	has(t, "stdout", r.stdout, `NAME\s+SCOPE\s+SCOPE ID\s+UPDATED`)
	has(t, "stdout", r.stdout, `API_KEY\s+organization\s+-`)
	if strings.Contains(r.stdout, "s3cret") {
		t.Error("a value in the list")
	}
	oxide(t, "", "secrets", "delete", "DEPLOY", "--pipeline", "hello").must(t, 0)
	if got := f.requests(); got[len(got)-1] != "DELETE /api/v1/secrets/DEPLOY?scope=pipeline&scope_id=p1" {
		t.Errorf("requests %q", got)
	}
	oxide(t, "", "secrets", "delete", "DEPLOY").must(t, 1)
}

func TestShellCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"echo hi && ls"}, "echo hi && ls"},
		{[]string{"echo", "hi"}, "echo hi"},
		{[]string{"echo", "a b"}, "echo 'a b'"},
		{[]string{"echo", ""}, "echo ''"},
		{[]string{"echo", "$HOME"}, "echo '$HOME'"},
		{[]string{"printf", "%s\n", "it's"}, `printf '%s` + "\n" + `' 'it'\''s'`},
		{[]string{"go", "test", "-run=TestX", "./..."}, "go test -run=TestX ./..."},
	}
	for _, tt := range tests {
		if got := shellCommand(tt.args); got != tt.want {
			t.Errorf("shellCommand(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

// jsonSame reports whether two JSON texts hold the same value.
func jsonSame(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestLogsAttempts: `oxide logs` prints each retried attempt of a stage
// after a header made of the system line that opens it, not as one stream
// with the attempts before.
func TestLogsAttempts(t *testing.T) {
	f := newFake(t)
	clientEnv(t, f.URL, fakeToken)
	line := func(stage, step string, attempt int, seq int64, text string) sdk.LogLine {
		l := sdk.LogLine{Stage: stage, Step: step, Stream: "stdout", Attempt: attempt, Seq: int64(attempt)<<32 + seq, Text: text}
		if step == "" {
			l.Stream = "system"
		}
		return l
	}
	f.mu.Lock()
	f.runs["r9"] = &fakeRun{run: sdk.Run{ID: "r9", Status: sdk.RunSuccess}, reads: 2, lines: []sdk.LogLine{
		line("build", "test", 1, 1, "compiling"),
		line("build", "test", 1, 2, "running tests"),
		line("build", "", 2, 0, "attempt 2 of 3 after agent lost"),
		line("build", "test", 2, 1, "compiling"),
		line("build", "test", 2, 2, "ok"),
		line("deploy", "push", 1, 1, "deployed"),
		line("notify", "send", 2, 1, "sent"), // attempt 2 without its system line
	}}
	f.mu.Unlock()
	r := oxide(t, "", "logs", "r9").must(t, 0)
	want := `[build/test] compiling
[build/test] running tests
[build] ── attempt 2 of 3 (agent lost) ──
[build/test] compiling
[build/test] ok
[deploy/push] deployed
[notify] ── attempt 2 ──
[notify/send] sent
`
	if r.stdout != want {
		t.Errorf("logs:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = oxide(t, "", "logs", "-o", "json", "r9").must(t, 0)
	var l sdk.LogLine
	if err := json.Unmarshal([]byte(strings.Split(r.stdout, "\n")[2]), &l); err != nil || l.Attempt != 2 || l.Stream != "system" {
		t.Errorf("logs -o json, third line: %+v (%v)", l, err)
	}
}
