package runner

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxLine is the longest line handed to a Sink; longer ones are split.
	maxLine = 64 << 10
	// readBuf holds a partial line of up to maxLine plus a read of at
	// least 64 KiB, the default capacity of a Linux pipe.
	readBuf = 2 * maxLine

	// After the step's shell has exited, its output is read until the
	// pipe is closed, but a background process may hold the pipe open:
	// the step then ends once the pipe has been idle for drainIdle, or
	// drainMax after the exit. What such processes write later is
	// discarded until the job ends.
	drainIdle = 100 * time.Millisecond
	drainMax  = time.Second
)

// lineBuf is a reader's memory, pooled across steps.
type lineBuf struct {
	buf   []byte
	lines [][]byte
}

var lineBufs = sync.Pool{New: func() any { return &lineBuf{buf: make([]byte, readBuf)} }}

// lineReader reads one output stream of a step attempt, splits it into
// lines, masks them and hands them to the sink a read at a time.
type lineReader struct {
	r      *jobRun
	f      *os.File
	info   StepInfo
	stream Stream
	wg     *sync.WaitGroup // done when the step's output is complete

	drainStart atomic.Int64 // UnixNano of the process's exit; 0 before
}

func (r *jobRun) newLineReader(f *os.File, info StepInfo, stream Stream, wg *sync.WaitGroup) *lineReader {
	return &lineReader{r: r, f: f, info: info, stream: stream, wg: wg}
}

// drain tells the reader that the step's process has exited.
func (lr *lineReader) drain() {
	now := time.Now()
	lr.drainStart.Store(now.UnixNano())
	lr.f.SetReadDeadline(now.Add(drainIdle))
}

func (lr *lineReader) run() {
	lb := lineBufs.Get().(*lineBuf)
	buf, lines := lb.buf, lb.lines
	masker, sink := lr.r.masker, lr.r.sink
	start := 0 // buf[:start] is an incomplete line from the previous read
	var err error
	for err == nil {
		var n int
		n, err = lr.f.Read(buf[start:])
		rest := buf[:start+n]
		lines = lines[:0]
		for {
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				break
			}
			line := rest[:i]
			if i > 0 && line[i-1] == '\r' {
				line = line[:i-1]
			}
			for len(line) > maxLine { // a long line that arrived whole
				lines = append(lines, masker.Mask(line[:maxLine]))
				line = line[maxLine:]
			}
			lines = append(lines, masker.Mask(line))
			rest = rest[i+1:]
		}
		for len(rest) >= maxLine {
			lines = append(lines, masker.Mask(rest[:maxLine]))
			rest = rest[maxLine:]
		}
		if err != nil && len(rest) > 0 { // a last line without newline
			lines = append(lines, masker.Mask(bytes.TrimSuffix(rest, []byte("\r"))))
			rest = nil
		}
		if len(lines) > 0 {
			sink.StepLines(lr.info, lr.stream, lines)
		}
		start = copy(buf, rest)
		if err == nil {
			if d := lr.drainStart.Load(); d != 0 {
				now := time.Now().UnixNano()
				lr.f.SetReadDeadline(time.Unix(0, min(now+int64(drainIdle), d+int64(drainMax))))
			}
		}
	}
	clear(lines[:cap(lines)]) // let the pool hold no masked copies
	lb.lines = lines[:0]

	if errors.Is(err, os.ErrDeadlineExceeded) && lr.r.keepLeftover(lr) {
		// A background process holds the pipe: the step is over, but
		// keep the pipe drained so that the process does not block or
		// die of SIGPIPE before the job ends.
		lr.wg.Done()
		for {
			if _, err := lr.f.Read(buf); err != nil {
				break
			}
		}
		lr.r.leftWG.Done()
	} else {
		defer lr.wg.Done()
	}
	lineBufs.Put(lb)
	lr.f.Close()
}

// keepLeftover registers a stream still held open after its step ended,
// and clears its deadline so that it is read until the job ends. It
// reports false when the job is already ending.
func (r *jobRun) keepLeftover(lr *lineReader) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	r.leftovers = append(r.leftovers, lr)
	r.leftWG.Add(1)
	lr.f.SetReadDeadline(time.Time{})
	return true
}

// stopLeftovers ends the reading of streams held open by background
// processes, and waits for it.
func (r *jobRun) stopLeftovers() {
	r.mu.Lock()
	r.stopped = true
	for _, lr := range r.leftovers {
		lr.f.SetReadDeadline(time.Unix(1, 0))
	}
	r.leftovers = nil
	r.mu.Unlock()
	r.leftWG.Wait()
}
