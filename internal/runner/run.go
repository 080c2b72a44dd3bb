package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/expr"
	"github.com/oxide-ci/oxide/internal/spec"
)

// baseEnvNames are the variables of the runner's own environment that a
// step on the host inherits (one in a Contained Environment, none);
// everything else it gets from the job.
var baseEnvNames = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "SHELL"}

// Run runs job's steps in env and reports their progress to sink: in
// order, or all at once when job.Parallel. The caller has prepared env and
// cleans it up after Run returns. Steps see each other's outputs as
// steps.<id>.outputs.<key>; with job.Parallel they see only those of
// earlier stages (job.Outputs), and their conditions see the job's status
// as it was at the start. An output holding a masked secret reaches the
// job's later steps as it is, and everything else (the Sink, the
// JobResult, and so later stages) masked. A job with a Condition of its own runs no step
// when it is false: its status is then skipped.
//
// Cancelling ctx cancels the running steps (StatusCancelled) and skips the
// rest; Job.Timeout ends the job the same way with ErrJobTimeout as the
// cause (StatusTimeout).
//
// A step ends when its shell has exited and its output pipes are closed,
// or, when something it started in the background keeps them open, when
// they have been quiet for 100ms (at most 1s after the exit). What such
// processes print later is discarded until Run returns; they run until the
// Environment's Cleanup stops them, as a CI runner cleans up orphans.
func Run(ctx context.Context, env Environment, job *spec.Job, sink Sink) JobResult {
	res := JobResult{Status: StatusSuccess, Steps: make([]StepResult, len(job.Steps))}
	if job.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, job.Timeout, ErrJobTimeout)
		defer cancel()
	}
	r := &jobRun{job: job, env: env, sink: sink}
	if sd, ok := env.(ScratchDirer); ok {
		r.scratch = sd.ScratchDir()
	}
	if r.scratch == "" {
		dir, err := os.MkdirTemp("", "oxide-run-")
		if err != nil {
			return notRun(ctx, res, fmt.Errorf("runner: %w", err))
		}
		r.scratch = dir
		defer os.RemoveAll(dir)
	}
	r.init()

	// condStatus is what the steps' success() and failure() see: the
	// job's own steps so far, as in GitHub Actions; res.Status is the
	// job's outcome. The job's own condition sees its dependencies.
	condStatus := StatusSuccess
	if job.Condition != nil {
		deps := StatusSuccess
		if job.DepsFailed {
			deps = StatusFailure
		}
		ec, _, _ := r.exprContext(&spec.Step{}, deps)
		run, why, err := job.Condition.Eval(ec)
		switch {
		case err != nil:
			return notRun(ctx, res, fmt.Errorf("condition: %w", err))
		case !run:
			res = notRun(ctx, res, why)
			res.Status, res.Reason, res.Err = StatusSkipped, why.Error(), nil
			return res
		}
	}
	if job.Parallel {
		var wg sync.WaitGroup
		real := make([]map[string]string, len(job.Steps))
		for i := range job.Steps {
			wg.Go(func() { res.Steps[i], real[i] = r.runStep(ctx, i, condStatus) })
		}
		wg.Wait()
		for i, sr := range res.Steps {
			r.record(job.Steps[i], sr, real[i])
			res.Status = worse(res.Status, r.counts(job.Steps[i], sr))
		}
	} else {
		for i, step := range job.Steps {
			sr, real := r.runStep(ctx, i, condStatus)
			res.Steps[i] = sr
			r.record(step, sr, real)
			res.Status = worse(res.Status, r.counts(step, sr))
			condStatus = worse(condStatus, r.counts(step, sr))
		}
	}
	// A job cut short by its context ends as its cause says, whatever
	// its steps managed before.
	if ctx.Err() != nil {
		for _, sr := range res.Steps {
			if sr.Status == StatusCancelled || sr.Status == StatusTimeout && !errors.Is(sr.Err, ErrStepTimeout) {
				res.Status = worse(res.Status, ctxStatus(context.Cause(ctx)))
				break
			}
		}
	}
	res.Outputs = r.outputs
	r.stopLeftovers()
	return res
}

// notRun is the result of a job that could not start. No step ran, and the
// Sink heard of none.
func notRun(ctx context.Context, res JobResult, err error) JobResult {
	res.Status, res.Err = StatusFailure, err
	if ctx.Err() != nil {
		res.Status = ctxStatus(context.Cause(ctx))
	}
	for i := range res.Steps {
		res.Steps[i] = StepResult{Status: StatusSkipped, Err: err}
	}
	return res
}

// jobRun is the state of one Run.
type jobRun struct {
	job     *spec.Job
	env     Environment
	sink    Sink
	scratch string // directory of the $OXIDE_OUTPUT files
	masker  *Masker
	baseEnv []string       // inherited base, CI, OXIDE, the OXIDE_* built-ins
	secrets map[string]any // secrets context: name → value
	// steps is the steps context: earlier stages' entries, then this
	// job's. It is written only between sequential steps.
	steps   map[string]any
	outputs map[string]map[string]string

	mu        sync.Mutex
	leftovers []*lineReader // streams still held open by background processes
	stopped   bool
	leftWG    sync.WaitGroup
}

func (r *jobRun) init() {
	job := r.job
	var masked []string
	r.secrets = make(map[string]any, len(job.Secrets))
	for _, s := range job.Secrets {
		r.secrets[s.Name] = s.Value
		if s.Masked {
			masked = append(masked, s.Value)
		}
	}
	r.masker = NewMasker(masked)

	r.baseEnv = make([]string, 0, len(baseEnvNames)+12+len(job.Matrix))
	if c, ok := r.env.(Contained); !ok || !c.Contained() {
		for _, name := range baseEnvNames {
			if v, ok := os.LookupEnv(name); ok {
				r.baseEnv = append(r.baseEnv, name+"="+v)
			}
		}
	}
	r.baseEnv = append(r.baseEnv, "CI=true", "OXIDE=true")
	r.baseEnv = append(r.baseEnv, builtins(job)...)

	r.steps = make(map[string]any, len(job.Outputs)+len(job.Steps))
	for id, out := range job.Outputs {
		r.steps[id] = map[string]any{"outputs": out}
	}
	r.outputs = make(map[string]map[string]string)
}

// builtins are the OXIDE_* variables that every step of job sees, the same
// wherever it runs.
func builtins(job *spec.Job) []string {
	env := []string{
		"OXIDE_RUN_ID=" + job.RunID,
		"OXIDE_JOB_ID=" + job.JobID,
		"OXIDE_ATTEMPT=" + strconv.Itoa(max(job.Attempt, 1)),
		"OXIDE_PIPELINE=" + job.Pipeline,
		"OXIDE_STAGE=" + job.Stage,
		"OXIDE_WORKSPACE=" + job.Workspace,
		"OXIDE_BRANCH=" + job.Git.Branch,
		"OXIDE_REF=" + job.Git.Ref,
		"OXIDE_SHA=" + job.Git.SHA,
		"OXIDE_EVENT=" + job.Git.Event,
	}
	for _, k := range slices.Sorted(maps.Keys(job.Matrix)) {
		env = append(env, "OXIDE_MATRIX_"+strings.ToUpper(k)+"="+expr.String(job.Matrix[k]))
	}
	return env
}

// values are the expression values that job's world gives: git facts, run
// ID, matrix and the runner it runs on.
func values(job *spec.Job) map[string]any {
	v := map[string]any{
		"branch": job.Git.Branch, "ref": job.Git.Ref, "sha": job.Git.SHA, "event": job.Git.Event,
		"run_id": job.RunID,
		"runner": map[string]any{"name": job.Runner.Name, "os": job.Runner.OS, "arch": job.Runner.Arch},
	}
	if job.Matrix != nil {
		v["matrix"] = job.Matrix
	}
	return v
}

// rank orders statuses from good to bad; worse keeps the worse of two.
func rank(s Status) Status {
	switch s {
	case StatusFailure, StatusTimeout, StatusCancelled:
		return s
	}
	return StatusSuccess
}

func severity(s Status) int {
	switch s {
	case StatusFailure:
		return 1
	case StatusTimeout:
		return 2
	case StatusCancelled:
		return 3
	}
	return 0
}

func worse(a, b Status) Status {
	if severity(b) > severity(a) {
		return rank(b)
	}
	return rank(a)
}

// ctxStatus is the status of something ended by a context with cause.
func ctxStatus(cause error) Status {
	if errors.Is(cause, ErrStepTimeout) || errors.Is(cause, ErrJobTimeout) || errors.Is(cause, context.DeadlineExceeded) {
		return StatusTimeout
	}
	return StatusCancelled
}

func exprStatus(s Status) expr.Status {
	switch s {
	case StatusFailure, StatusTimeout:
		return expr.StatusFailure
	case StatusCancelled:
		return expr.StatusCancelled
	}
	return expr.StatusSuccess
}

// record adds a finished step to the steps context, with its outputs as
// the step wrote them (real), and to the job's outputs, masked.
func (r *jobRun) record(step *spec.Step, sr StepResult, real map[string]string) {
	id := step.Key()
	if id == "" {
		return
	}
	if sr.Outputs != nil {
		r.outputs[id] = sr.Outputs
	}
	outputs := map[string]string{}
	if real != nil {
		outputs = real
	}
	conclusion := sr.Status
	if r.counts(step, sr) == StatusSuccess {
		conclusion = StatusSuccess
	}
	if sr.Status == StatusSkipped {
		conclusion = StatusSkipped
	}
	r.steps[id] = map[string]any{
		"outputs":    outputs,
		"outcome":    string(sr.Status),
		"conclusion": string(conclusion),
	}
}

// counts is what a finished step contributes to the job's status:
// continue_on_error turns its failure or timeout into success, and a step
// that never started counts for nothing (the job's context says why it
// did not).
func (r *jobRun) counts(step *spec.Step, sr StepResult) Status {
	if sr.Status == StatusSkipped || sr.Attempts == 0 && sr.Status == StatusCancelled {
		return StatusSuccess
	}
	if (sr.Status == StatusFailure || sr.Status == StatusTimeout) && sr.ContinueOnError {
		return StatusSuccess
	}
	return rank(sr.Status)
}

// runStep runs step i with all its attempts and reports it to the sink.
// It returns the step's result, whose outputs are masked, and its outputs
// as the step wrote them.
func (r *jobRun) runStep(ctx context.Context, i int, condStatus Status) (StepResult, map[string]string) {
	step := r.job.Steps[i]
	info := StepInfo{Job: r.job, Index: i, Step: step, Attempt: 1}
	if ctx.Err() != nil {
		sr := StepResult{Status: StatusCancelled, Err: context.Cause(ctx)}
		r.sink.StepCompleted(info, sr)
		return sr, nil
	}

	ec, vars, varErr := r.exprContext(step, condStatus)
	run, why, err := step.Condition.Eval(ec)
	if err == nil && !run {
		sr := StepResult{Status: StatusSkipped, Err: why}
		r.sink.StepCompleted(info, sr)
		return sr, nil
	}

	var sr StepResult
	var real map[string]string
	switch {
	case err != nil:
		sr = r.failEarly(info, err)
	case step.Plugin != "":
		sr = r.failEarly(info, fmt.Errorf("%w (plugin %q)", ErrPluginUnavailable, step.Plugin))
	case varErr != nil:
		sr = r.failEarly(info, varErr)
	default:
		sr, real = r.execStep(ctx, info, ec, vars)
	}
	info.Attempt = max(sr.Attempts, 1)
	if sr.Status == StatusFailure || sr.Status == StatusTimeout && errors.Is(sr.Err, ErrStepTimeout) {
		coe, err := continueOnError(step.ContinueOnError, ec)
		if err != nil {
			r.say(info, fmt.Sprintf("continue_on_error: %v", err))
		}
		sr.ContinueOnError = coe
	}
	r.sink.StepCompleted(info, sr)
	return sr, real
}

// failEarly reports a step that fails before its command could start.
func (r *jobRun) failEarly(info StepInfo, err error) StepResult {
	r.sink.StepStarted(info)
	r.say(info, "error: "+err.Error())
	return StepResult{Status: StatusFailure, ExitCode: -1, Attempts: 1, Err: err}
}

// say prints a message of the runner among the step's stderr lines.
func (r *jobRun) say(info StepInfo, msg string) {
	var lines [][]byte
	for line := range strings.Lines(msg) {
		lines = append(lines, r.masker.Mask([]byte(strings.TrimRight(line, "\r\n"))))
	}
	if len(lines) > 0 {
		r.sink.StepLines(info, Stderr, lines)
	}
}

// exprContext builds what the step's expressions see, interpolating the
// job's and then the step's variables in order (each sees those before
// it). It returns the variables as interpolated, and the first
// interpolation error, which matters only if the step runs.
func (r *jobRun) exprContext(step *spec.Step, condStatus Status) (*expr.Context, [][2]string, error) {
	job := r.job
	nvars := len(job.Variables) + len(step.Variables)
	values := values(job)
	varsCtx := make(map[string]any, nvars)
	values["steps"] = r.steps
	values["secrets"] = r.secrets
	values["variables"] = varsCtx
	reserved := func(name string) bool {
		_, ok := values[name]
		return ok
	}
	ec := &expr.Context{Values: values, Status: exprStatus(condStatus), Dir: job.Workspace}

	var firstErr error
	vars := make([][2]string, 0, nvars)
	for _, list := range []spec.Vars{job.Variables, step.Variables} {
		for _, v := range list {
			val, err := expr.Interpolate(v.Value, ec)
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("variable %s: %w", v.Name, err)
			}
			vars = append(vars, [2]string{v.Name, val})
			varsCtx[v.Name] = val
			if !reserved(v.Name) {
				values[v.Name] = val
			}
		}
	}
	return ec, vars, firstErr
}

// continueOnError evaluates a step's continue_on_error: "true", "false" or
// an expression that interpolates to one of them.
func continueOnError(src string, ec *expr.Context) (bool, error) {
	switch strings.TrimSpace(src) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	s, err := expr.Interpolate(src, ec)
	if err != nil {
		return false, err
	}
	return spec.Truthy(s), nil
}

// execStep interpolates the step's command and runs its attempts. It
// returns the last attempt's result and its outputs as written.
func (r *jobRun) execStep(ctx context.Context, info StepInfo, ec *expr.Context, vars [][2]string) (StepResult, map[string]string) {
	step := info.Step
	script, err := expr.Interpolate(step.Run, ec)
	if err != nil {
		return r.failEarly(info, fmt.Errorf("run: %w", err)), nil
	}
	wd, err := expr.Interpolate(step.WorkingDir, ec)
	if err != nil {
		return r.failEarly(info, fmt.Errorf("working_directory: %w", err)), nil
	}
	dir := r.job.Workspace
	if wd != "" {
		if filepath.IsAbs(wd) {
			dir = wd
		} else {
			dir = filepath.Join(r.job.Workspace, wd)
		}
	}
	cmd := Command{Script: script, Shell: step.Shell, Dir: dir, Env: r.stepEnv(step, vars)}

	maxAttempts, delay := 1, time.Duration(0)
	if rt := step.Retry; rt != nil && rt.MaxAttempts > 1 {
		maxAttempts, delay = rt.MaxAttempts, rt.Delay
	}
	for attempt := 1; ; attempt++ {
		info.Attempt = attempt
		sr, real := r.attempt(ctx, info, cmd)
		sr.Attempts = attempt
		if sr.Status == StatusSuccess || attempt >= maxAttempts || ctx.Err() != nil || !retries(step.Retry, sr.Status) {
			return sr, real
		}
		r.say(info, fmt.Sprintf("retrying in %s (attempt %d/%d)", delay, attempt+1, maxAttempts))
		if !sleep(ctx, delay) {
			return sr, real
		}
		if step.Retry.ExponentialBackoff {
			delay *= 2
		}
	}
}

// retries reports whether an attempt that ended with s is tried again.
func retries(rt *spec.Retry, s Status) bool {
	if len(rt.RetryOn) == 0 {
		return s == StatusFailure
	}
	for _, on := range rt.RetryOn {
		if Status(on) == s {
			return true
		}
	}
	return false
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// stepEnv is the complete environment of a step's process, without
// OXIDE_OUTPUT: inherited base, CI, OXIDE, built-ins, variables, secrets;
// a later entry replaces an earlier one of the same name in place.
func (r *jobRun) stepEnv(step *spec.Step, vars [][2]string) []string {
	env := make([]string, 0, len(r.baseEnv)+len(vars)+len(r.job.Secrets)+1)
	index := make(map[string]int, cap(env))
	add := func(name, kv string) {
		if name == "OXIDE_OUTPUT" {
			return
		}
		if i, ok := index[name]; ok {
			env[i] = kv
			return
		}
		index[name] = len(env)
		env = append(env, kv)
	}
	for _, kv := range r.baseEnv {
		name, _, _ := strings.Cut(kv, "=")
		add(name, kv)
	}
	for _, v := range vars {
		add(v[0], v[0]+"="+v[1])
	}
	for _, s := range r.job.Secrets {
		if s.Name != "" && (s.Step == "" || s.Step == step.Key()) {
			add(s.Name, s.Name+"="+s.Value)
		}
	}
	return env
}

// attempt runs one attempt of a step: its process, its output streams and
// its $OXIDE_OUTPUT file. The result's outputs are masked; the second
// result is the outputs as written.
func (r *jobRun) attempt(ctx context.Context, info StepInfo, cmd Command) (StepResult, map[string]string) {
	if t := info.Step.Timeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t, ErrStepTimeout)
		defer cancel()
	}
	outPath := filepath.Join(r.scratch, "output-"+strconv.Itoa(info.Index)+"-"+strconv.Itoa(info.Attempt))
	cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], "OXIDE_OUTPUT="+outPath)

	r.sink.StepStarted(info)
	outR, outW, err := pipe()
	if err != nil {
		return r.infraFailure(info, err), nil
	}
	errR, errW, err := pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return r.infraFailure(info, err), nil
	}
	var wg sync.WaitGroup
	wg.Add(2)
	stdout := r.newLineReader(outR, info, Stdout, &wg)
	stderr := r.newLineReader(errR, info, Stderr, &wg)
	go stdout.run()
	go stderr.run()

	cmd.Stdout, cmd.Stderr = outW, errW
	start := time.Now()
	code, err := r.env.Exec(ctx, cmd)
	dur := time.Since(start)
	outW.Close()
	errW.Close()
	stdout.drain()
	stderr.drain()
	wg.Wait()

	sr := StepResult{ExitCode: code, Duration: dur}
	switch {
	case err == nil && code == 0:
		sr.Status = StatusSuccess
	case err == nil:
		sr.Status = StatusFailure
	case ctx.Err() != nil:
		sr.Status, sr.Err = ctxStatus(context.Cause(ctx)), context.Cause(ctx)
	default:
		sr.Status, sr.Err = StatusFailure, err
		r.say(info, "error: "+err.Error())
	}
	if sr.Status == StatusTimeout && errors.Is(sr.Err, ErrStepTimeout) {
		r.say(info, fmt.Sprintf("step timed out after %s", info.Step.Timeout))
	}

	var outputs map[string]string
	data, err := os.ReadFile(outPath)
	switch {
	case err == nil:
		var problems []string
		outputs, problems = parseOutputs(data)
		for _, p := range problems {
			r.say(info, "OXIDE_OUTPUT: "+p)
		}
		sr.Outputs = r.maskOutputs(info, outputs)
	case !errors.Is(err, os.ErrNotExist):
		r.say(info, "OXIDE_OUTPUT: "+err.Error())
	}
	return sr, outputs
}

// maskOutputs returns outputs with secrets masked in their values, and
// warns on the step's stderr of each output it masks. It returns outputs
// itself when none holds a secret.
func (r *jobRun) maskOutputs(info StepInfo, outputs map[string]string) map[string]string {
	var masked map[string]string
	for _, k := range slices.Sorted(maps.Keys(outputs)) {
		v := string(r.masker.Mask([]byte(outputs[k])))
		if v == outputs[k] {
			continue
		}
		if masked == nil {
			masked = maps.Clone(outputs)
		}
		masked[k] = v
		r.say(info, "output "+k+" holds a secret: masked")
	}
	if masked == nil {
		return outputs
	}
	return masked
}

func (r *jobRun) infraFailure(info StepInfo, err error) StepResult {
	err = fmt.Errorf("runner: %w", err)
	r.say(info, "error: "+err.Error())
	return StepResult{Status: StatusFailure, ExitCode: -1, Err: err}
}

// parseOutputs reads an $OXIDE_OUTPUT file: key=value lines, and
// key<<DELIMITER … DELIMITER for values of several lines (as GitHub
// Actions' GITHUB_OUTPUT). It returns the outputs (nil when there are
// none) and a message per line it could not read.
func parseOutputs(data []byte) (map[string]string, []string) {
	var out map[string]string
	var problems []string
	set := func(k, v string) {
		if out == nil {
			out = make(map[string]string)
		}
		out[k] = v
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSuffix(lines[i], "\r")
		if line == "" {
			continue
		}
		eq, hd := strings.IndexByte(line, '='), strings.Index(line, "<<")
		if hd > 0 && (eq < 0 || hd < eq) {
			key, delim := line[:hd], line[hd+2:]
			if delim == "" {
				problems = append(problems, fmt.Sprintf("line %d: %q has an empty delimiter", i+1, line))
				continue
			}
			var value []string
			start, closed := i+1, false
			for i++; i < len(lines); i++ {
				l := strings.TrimSuffix(lines[i], "\r")
				if l == delim {
					closed = true
					break
				}
				value = append(value, l)
			}
			if !closed {
				problems = append(problems, fmt.Sprintf("line %d: no line %q ends the value of %q", start, delim, key))
				if n := len(value); n > 0 && value[n-1] == "" {
					value = value[:n-1] // the file's final newline
				}
			}
			set(key, strings.Join(value, "\n"))
			continue
		}
		if eq <= 0 {
			problems = append(problems, fmt.Sprintf("line %d: want key=value or key<<DELIMITER, got %q", i+1, line))
			continue
		}
		set(line[:eq], line[eq+1:])
	}
	return out, problems
}
