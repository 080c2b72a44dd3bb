package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
)

// Log batches: at most batchLines lines or batchDelay between a line and
// its sending.
const (
	batchLines = 100
	batchDelay = 100 * time.Millisecond
)

// logSink is the runner.Sink of one job: it numbers lines and sends them in
// batches, and reports steps as they start. Sequence numbers carry the
// attempt in their high bits, so that the lines of a retried attempt follow
// those of the one before rather than being taken for duplicates.
type logSink struct {
	ctx     context.Context
	control Control
	a       spec.Assignment
	log     *slog.Logger

	mu    sync.Mutex
	seq   int64
	batch []spec.LogLine
	timer *time.Timer
}

func newLogSink(ctx context.Context, c Control, a spec.Assignment, log *slog.Logger) *logSink {
	return &logSink{ctx: ctx, control: c, a: a, log: log, seq: int64(a.Lease.Attempt) << 32}
}

func (s *logSink) StepStarted(info runner.StepInfo) {
	if err := s.control.StepUpdate(s.ctx, s.a.Lease, info.Index, runner.StepResult{Status: runner.StatusRunning}); err != nil {
		s.log.Warn("step update", "err", err)
	}
}

func (s *logSink) StepLines(info runner.StepInfo, stream runner.Stream, lines [][]byte) {
	now := time.Now().UTC()
	s.mu.Lock()
	for _, l := range lines {
		s.seq++
		s.batch = append(s.batch, spec.LogLine{Seq: s.seq, Attempt: s.a.Lease.Attempt, StepID: info.Step.ID, Stream: string(stream), Text: string(l), Time: now})
		if len(s.batch) >= batchLines {
			s.flushLocked()
		}
	}
	if len(s.batch) > 0 && s.timer == nil {
		s.timer = time.AfterFunc(batchDelay, s.flush)
	}
	s.mu.Unlock()
}

func (s *logSink) StepCompleted(runner.StepInfo, runner.StepResult) { s.flush() }

func (s *logSink) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
}

// flushLocked sends the batch; the caller holds s.mu, which keeps batches
// in order.
func (s *logSink) flushLocked() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if len(s.batch) == 0 {
		return
	}
	if err := s.control.AppendLogs(s.ctx, s.a.Lease.JobID, s.a.RunID, s.batch); err != nil {
		s.log.Error("append logs", "err", err, "lines", len(s.batch))
	}
	s.batch = s.batch[:0]
}

// close sends what is left.
func (s *logSink) close() { s.flush() }
