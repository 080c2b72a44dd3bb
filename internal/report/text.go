// Package report shows a local run to its user: live text lines prefixed
// with their stage and step and a summary (Text), or newline-delimited JSON
// events named as in the reference AsyncAPI specification (JSON).
package report

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/local"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
)

// ANSI colours; stages cycle through the palette.
const (
	reset = "\x1b[0m"
	bold  = "\x1b[1m"
	dim   = "\x1b[2m"
	red   = "\x1b[31m"
	green = "\x1b[32m"
)

var palette = []string{"\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[34m", "\x1b[32m", "\x1b[96m"}

// Text writes a run as human-readable lines: each output line prefixed with
// [stage/step], step starts and ends, and a summary of every stage instance
// and step at the end.
type Text struct {
	mu    sync.Mutex
	w     *bufio.Writer
	color bool
	// notes are printed after the run's header, e.g. that --environment
	// host overrides what the stages ask for.
	Notes []string
}

// NewText returns a Text reporter writing to w, in colour when color is set.
func NewText(w io.Writer, color bool) *Text {
	return &Text{w: bufio.NewWriterSize(w, 64<<10), color: color}
}

func (t *Text) paint(code, s string) string {
	if !t.color {
		return s
	}
	return code + s + reset
}

func (t *Text) stagePaint(s runner.StepInfo, text string) string {
	if !t.color {
		return text
	}
	return palette[len(s.Job.Stage)%len(palette)] + text + reset
}

// RunStarted implements local.Reporter.
func (t *Text) RunStarted(r *local.Run) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "%s %s (run %s, %d stage instances)\n", t.paint(bold, "oxide: running"), r.Plan.Pipeline, r.ID, len(r.Plan.Nodes))
	for _, n := range t.Notes {
		fmt.Fprintf(t.w, "oxide: %s\n", n)
	}
	t.w.Flush()
}

// StageStarted implements local.Reporter.
func (t *Text) StageStarted(r *local.Run, n *plan.Node) {}

// StageCompleted implements local.Reporter: it tells why a stage did not run.
func (t *Text) StageCompleted(r *local.Run, n *plan.Node) {
	res := r.Stages[n.Index]
	if res.Reason == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "[%s] %s %s: %s\n", n.Name, statusMark(t, res.Status), res.Status, res.Reason)
	t.w.Flush()
}

// StepStarted implements runner.Sink.
func (t *Text) StepStarted(s runner.StepInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	attempt := ""
	if s.Attempt > 1 {
		attempt = fmt.Sprintf(" (attempt %d)", s.Attempt)
	}
	fmt.Fprintf(t.w, "%s %s%s\n", t.stagePaint(s, "["+s.Job.Stage+"]"), t.paint(bold, "▶ "+s.Step.Name), attempt)
	t.w.Flush()
}

// StepLines implements runner.Sink.
func (t *Text) StepLines(s runner.StepInfo, stream runner.Stream, lines [][]byte) {
	prefix := t.stagePaint(s, "["+s.Job.Stage+"/"+s.Step.Name+"]") + " "
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range lines {
		t.w.WriteString(prefix)
		t.w.Write(l)
		t.w.WriteByte('\n')
	}
	t.w.Flush()
}

// StepCompleted implements runner.Sink.
func (t *Text) StepCompleted(s runner.StepInfo, r runner.StepResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "%s %s %s %s\n", t.stagePaint(s, "["+s.Job.Stage+"]"), statusMark(t, r.Status), s.Step.Name, t.paint(dim, stepDetail(r)))
	t.w.Flush()
}

// RunCompleted implements local.Reporter: it prints the summary.
func (t *Text) RunCompleted(r *local.Run) {
	t.mu.Lock()
	defer t.mu.Unlock()
	width := 0
	for _, n := range r.Plan.Nodes {
		width = max(width, len(n.Name))
		for _, s := range n.Job.Steps {
			width = max(width, len(s.Name)+4)
		}
	}
	fmt.Fprintf(t.w, "\n%s\n", t.paint(bold, "Summary"))
	counts := map[runner.Status]int{}
	for _, n := range r.Plan.Nodes {
		res := r.Stages[n.Index]
		counts[res.Status]++
		detail := duration(res.Duration)
		if res.Reason != "" {
			detail = res.Reason
		}
		fmt.Fprintf(t.w, "  %s %-*s  %s\n", statusMark(t, res.Status), width, n.Name, t.paint(dim, detail))
		for i, sr := range res.Steps {
			fmt.Fprintf(t.w, "      %s %-*s  %s\n", statusMark(t, sr.Status), width-4, n.Job.Steps[i].Name, t.paint(dim, stepDetail(sr)))
		}
	}
	var parts []string
	for _, st := range []runner.Status{runner.StatusSuccess, runner.StatusFailure, runner.StatusTimeout, runner.StatusCancelled, runner.StatusSkipped} {
		if counts[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
		}
	}
	fmt.Fprintf(t.w, "\n%s %s in %s (%s)\n", t.paint(bold, "Run"), statusWord(t, r.Status), duration(r.Duration), strings.Join(parts, ", "))
	t.w.Flush()
}

func stepDetail(r runner.StepResult) string {
	switch {
	case r.Err != nil:
		return r.Err.Error()
	case r.Status == runner.StatusSkipped:
		return "skipped"
	case r.Status == runner.StatusFailure:
		return fmt.Sprintf("exit %d after %s", r.ExitCode, duration(r.Duration))
	case r.Status == runner.StatusTimeout:
		return "timed out after " + duration(r.Duration)
	case r.Status == runner.StatusCancelled:
		return "cancelled after " + duration(r.Duration)
	}
	return duration(r.Duration)
}

func statusMark(t *Text, s runner.Status) string {
	switch s {
	case runner.StatusSuccess:
		return t.paint(green, "✓")
	case runner.StatusFailure, runner.StatusTimeout:
		return t.paint(red, "✗")
	case runner.StatusCancelled:
		return t.paint(red, "⊘")
	}
	return t.paint(dim, "-")
}

func statusWord(t *Text, s runner.Status) string {
	if s == runner.StatusSuccess {
		return t.paint(green, string(s))
	}
	return t.paint(red, string(s))
}

// duration rounds d for people: 12ms, 1.2s, 3m4s.
func duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
