package report

import (
	"bufio"
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/local"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
)

// JSON writes a run as newline-delimited events: one JSON object a line,
// with a "type" field and the fields of the AsyncAPI payload of that type.
type JSON struct {
	mu    sync.Mutex
	w     *bufio.Writer
	runID string
	lines map[stepKey]int // lines written so far per step, for line_number
}

type stepKey struct {
	job  *spec.Job
	step int
}

// NewJSON returns a JSON reporter writing to w.
func NewJSON(w io.Writer) *JSON {
	return &JSON{w: bufio.NewWriterSize(w, 64<<10), lines: map[stepKey]int{}}
}

// emit writes {"type": typ, ...payload} and, when flush is set, flushes.
// The caller holds j.mu.
func (j *JSON) emit(typ events.Type, payload any, flush bool) {
	b, err := json.Marshal(payload)
	if err != nil { // the payloads are plain structs: cannot happen
		panic(err)
	}
	j.w.WriteString(`{"type":"`)
	j.w.WriteString(string(typ))
	j.w.WriteString(`",`)
	j.w.Write(b[1:])
	j.w.WriteByte('\n')
	if flush {
		j.w.Flush()
	}
}

func (j *JSON) event(typ events.Type, payload any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.emit(typ, payload, true)
}

// RunStarted implements local.Reporter.
func (j *JSON) RunStarted(r *local.Run) {
	j.runID = r.ID
	j.event(events.TypeRunStarted, events.RunStarted{
		RunID: r.ID, PipelineID: r.Plan.Pipeline, PipelineName: r.Plan.Pipeline,
		AgentID: "local", AgentName: "local", StartedAt: r.Started.UTC(),
	})
}

// StageStarted implements local.Reporter.
func (j *JSON) StageStarted(r *local.Run, n *plan.Node) {
	j.event(events.TypeStageStarted, events.StageStarted{
		RunID: r.ID, StageName: n.Name, StageIndex: n.Index, StepCount: len(n.Job.Steps),
		StartedAt: r.Stages[n.Index].Started.UTC(),
	})
}

// StageCompleted implements local.Reporter.
func (j *JSON) StageCompleted(r *local.Run, n *plan.Node) {
	res := r.Stages[n.Index]
	e := events.StageCompleted{
		RunID: r.ID, StageName: n.Name, StageIndex: n.Index, Status: string(res.Status),
		DurationMS: res.Duration.Milliseconds(), Reason: res.Reason, CompletedAt: time.Now().UTC(),
	}
	for _, s := range res.Steps {
		switch s.Status {
		case runner.StatusSuccess:
			e.StepsPassed++
		case runner.StatusFailure, runner.StatusTimeout:
			e.StepsFailed++
		}
	}
	j.event(events.TypeStageCompleted, e)
}

// RunCompleted implements local.Reporter.
func (j *JSON) RunCompleted(r *local.Run) {
	e := events.RunCompleted{
		RunID: r.ID, PipelineID: r.Plan.Pipeline, PipelineName: r.Plan.Pipeline, Status: string(r.Status),
		DurationMS: r.Duration.Milliseconds(), CompletedAt: time.Now().UTC(),
	}
	for _, s := range r.Stages {
		switch s.Status {
		case runner.StatusSuccess:
			e.StagesPassed++
		case runner.StatusFailure, runner.StatusTimeout, runner.StatusCancelled:
			e.StagesFailed++
		}
	}
	j.event(events.TypeRunCompleted, e)
}

// StepStarted implements runner.Sink.
func (j *JSON) StepStarted(s runner.StepInfo) {
	j.event(events.TypeStepStarted, events.StepStarted{
		RunID: j.runID, StageName: s.Job.Stage, StepID: s.Step.ID, StepName: s.Step.Name,
		Plugin: s.Step.Plugin, Attempt: s.Attempt, StartedAt: time.Now().UTC(),
	})
}

// StepLines implements runner.Sink.
func (j *JSON) StepLines(s runner.StepInfo, stream runner.Stream, lines [][]byte) {
	now := time.Now().UTC()
	key := stepKey{s.Job, s.Index}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, l := range lines {
		j.lines[key]++
		j.emit(events.TypeStepOutput, events.StepOutput{
			RunID: j.runID, StageName: s.Job.Stage, StepID: s.Step.ID, Stream: string(stream),
			Line: string(l), LineNumber: j.lines[key], Timestamp: now,
		}, false)
	}
	j.w.Flush()
}

// StepCompleted implements runner.Sink.
func (j *JSON) StepCompleted(s runner.StepInfo, r runner.StepResult) {
	e := events.StepCompleted{
		RunID: j.runID, StageName: s.Job.Stage, StepID: s.Step.ID, StepName: s.Step.Name,
		Plugin: s.Step.Plugin, Status: string(r.Status), ExitCode: r.ExitCode,
		DurationMS: r.Duration.Milliseconds(), CompletedAt: time.Now().UTC(),
	}
	if r.Err != nil {
		e.Error = r.Err.Error()
	}
	j.event(events.TypeStepCompleted, e)
}
