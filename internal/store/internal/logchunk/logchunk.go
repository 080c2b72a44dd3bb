// Package logchunk encodes a job's log lines into chunks, the rows in which
// both drivers store logs: an Append of up to MaxLines lines is one row.
package logchunk

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"github.com/klauspost/compress/s2"

	"github.com/oxide-ci/oxide/internal/store"
)

// A log chunk holds lines of one job, by Seq, in one log_chunks row. It is
// encoded as chunkAttempts followed by, per line:
//
//	varint  Seq, minus the previous line's (the first: minus 0)
//	varint  Time in Unix microseconds, minus the previous line's
//	varint  Attempt, minus the previous line's
//	uvarint 0 if StepID is the previous line's (the first: ""), else its length + 1, and its bytes
//	uvarint the same for Stream
//	uvarint length of Text, and its bytes
//
// or as chunkAttemptsS2 followed by that (less chunkAttempts) compressed
// with S2 (github.com/klauspost/compress/s2, a faster Snappy), when that
// saves an eighth at least: log lines repeat themselves, and every byte
// saved is one less to write (on SQLite, twice: to the WAL, then the
// database).
//
// Chunks written before lines had an Attempt are read too: chunkBinary and
// chunkS2, the same without the Attempt varint, and the JSON that
// migration 0004 wrote for the lines stored before it (an array of [seq,
// step_id or null, stream, content, logged_at], logged_at as text (SQLite)
// or in Unix microseconds (PostgreSQL)). Their lines' Attempt is Seq's high
// 32 bits, where workers numbering lines have always put it.
//
// Both drivers store their logs this way.
const (
	chunkBinary     = 1
	chunkS2         = 2
	chunkAttempts   = 3
	chunkAttemptsS2 = 4
	chunkJSON       = '['
)

// Chunk limits: a chunk ends after MaxLines lines or once it holds
// MaxBytes bytes. An Append of up to MaxLines lines, the usual case,
// takes one row.
const (
	MaxLines = 256
	MaxBytes = 64 << 10
)

// Writer encodes lines into chunks.
type Writer struct {
	buf                        []byte // chunkAttempts and lines
	z                          []byte // chunkAttemptsS2 and buf[1:] compressed
	N                          int    // lines in the chunk
	First, Last                int64  // their first and last Seq
	prevSeq, prevTime, prevAtt int64
	prevStep, prevStrm         string
}

// Reset starts a chunk.
func (w *Writer) Reset() {
	*w = Writer{buf: append(w.buf[:0], chunkAttempts), z: w.z}
}

// Chunk returns the encoded chunk, valid until reset.
func (w *Writer) Chunk() []byte {
	const minCompress = 256 // bytes; below, not worth a try
	if len(w.buf) < minCompress {
		return w.buf
	}
	body := w.buf[1:]
	if n := 1 + s2.MaxEncodedLen(len(body)); cap(w.z) < n {
		w.z = make([]byte, n)
	}
	w.z = w.z[:cap(w.z)]
	w.z[0] = chunkAttemptsS2
	z := s2.Encode(w.z[1:], body)
	if len(z) > len(body)-len(body)/8 {
		return w.buf
	}
	return w.z[:1+len(z)]
}

// Full reports whether the chunk takes no more lines.
func (w *Writer) Full() bool { return w.N >= MaxLines || len(w.buf) >= MaxBytes }

// Add appends l, whose Seq is greater than the previous line's, stamped at
// (in Unix microseconds).
func (w *Writer) Add(l store.LogLine, at int64) {
	if w.N == 0 {
		w.First = l.Seq
	}
	w.Last = l.Seq
	w.N++
	w.buf = binary.AppendVarint(w.buf, l.Seq-w.prevSeq)
	w.buf = binary.AppendVarint(w.buf, at-w.prevTime)
	w.buf = binary.AppendVarint(w.buf, int64(l.Attempt)-w.prevAtt)
	w.prevSeq, w.prevTime, w.prevAtt = l.Seq, at, int64(l.Attempt)
	w.buf = appendRepeated(w.buf, l.StepID, &w.prevStep)
	w.buf = appendRepeated(w.buf, l.Stream, &w.prevStrm)
	w.buf = binary.AppendUvarint(w.buf, uint64(len(l.Text)))
	w.buf = append(w.buf, l.Text...)
}

func appendRepeated(b []byte, s string, prev *string) []byte {
	if s == *prev {
		return append(b, 0)
	}
	*prev = s
	b = binary.AppendUvarint(b, uint64(len(s))+1)
	return append(b, s...)
}

var errBadChunk = errors.New("corrupt log chunk")

// Decode appends to ls the lines of chunk raw with Seq >= from, up to
// len(ls) == limit (limit 0: no limit). Their strings share one copy of the
// chunk's text.
func Decode(ls []store.LogLine, raw []byte, from int64, limit int) ([]store.LogLine, error) {
	if len(raw) == 0 {
		return ls, errBadChunk
	}
	var c string
	switch raw[0] {
	case chunkBinary, chunkAttempts:
		c = string(raw[1:])
	case chunkS2, chunkAttemptsS2:
		n, err := s2.DecodedLen(raw[1:])
		if err != nil {
			return ls, fmt.Errorf("%w: %v", errBadChunk, err)
		}
		buf := make([]byte, n)
		if _, err := s2.Decode(buf, raw[1:]); err != nil {
			return ls, fmt.Errorf("%w: %v", errBadChunk, err)
		}
		c = unsafe.String(unsafe.SliceData(buf), n) // buf is ours alone, and never written again
	case chunkJSON:
		return decodeJSONChunk(ls, raw, from, limit)
	default:
		return ls, fmt.Errorf("%w: format %d", errBadChunk, raw[0])
	}
	r := chunkReader{c: c}
	attempts := raw[0] == chunkAttempts || raw[0] == chunkAttemptsS2
	var (
		seq, at, attempt int64
		step, stream     string
	)
	for r.i < len(c) && (limit <= 0 || len(ls) < limit) {
		seq += r.varint()
		at += r.varint()
		if attempts {
			attempt += r.varint()
		} else {
			attempt = seq >> 32
		}
		r.repeated(&step)
		r.repeated(&stream)
		text := r.str(r.uvarint())
		if r.bad {
			return ls, errBadChunk
		}
		if seq >= from {
			ls = append(ls, store.LogLine{Seq: seq, Attempt: int(attempt), StepID: step, Stream: stream, Text: text, Time: time.UnixMicro(at).UTC()})
		}
	}
	return ls, nil
}

// chunkReader reads a binary chunk c from offset i; bad reports a read past
// its end or a malformed varint.
type chunkReader struct {
	c   string
	i   int
	bad bool
}

func (r *chunkReader) uvarint() uint64 {
	var x uint64
	var sh uint
	for j := r.i; j < len(r.c) && j-r.i < binary.MaxVarintLen64; j++ {
		b := r.c[j]
		if b < 0x80 {
			r.i = j + 1
			return x | uint64(b)<<sh
		}
		x |= uint64(b&0x7f) << sh
		sh += 7
	}
	r.bad = true
	return 0
}

func (r *chunkReader) varint() int64 {
	u := r.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (r *chunkReader) str(n uint64) string {
	if n > uint64(len(r.c)-r.i) {
		r.bad = true
		return ""
	}
	s := r.c[r.i : r.i+int(n)]
	r.i += int(n)
	return s
}

// repeated reads a StepID or Stream: unchanged, or a new one.
func (r *chunkReader) repeated(prev *string) {
	if n := r.uvarint(); n > 0 {
		*prev = r.str(n - 1)
	}
}

// decodeJSONChunk decodes a chunk that migration 0004 wrote.
func decodeJSONChunk(ls []store.LogLine, c []byte, from int64, limit int) ([]store.LogLine, error) {
	d := json.NewDecoder(bytes.NewReader(c))
	d.UseNumber()
	var rows [][5]any
	if err := d.Decode(&rows); err != nil {
		return ls, fmt.Errorf("%w: %v", errBadChunk, err)
	}
	var out []store.LogLine
	for _, r := range rows {
		num, _ := r[0].(json.Number)
		seq, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil {
			return ls, fmt.Errorf("%w: seq %v", errBadChunk, r[0])
		}
		step, _ := r[1].(string)
		stream, _ := r[2].(string)
		text, _ := r[3].(string)
		var t time.Time
		switch at := r[4].(type) {
		case string: // SQLite's TEXT
			if t, err = time.Parse(time.RFC3339Nano, at); err != nil {
				return ls, fmt.Errorf("%w: %v", errBadChunk, err)
			}
		case json.Number: // Unix microseconds, from PostgreSQL
			us, err := at.Int64()
			if err != nil {
				return ls, fmt.Errorf("%w: %v", errBadChunk, err)
			}
			t = time.UnixMicro(us)
		default:
			return ls, fmt.Errorf("%w: time %v", errBadChunk, r[4])
		}
		t = t.UTC()
		out = append(out, store.LogLine{Seq: seq, Attempt: int(seq >> 32), StepID: step, Stream: stream, Text: text, Time: t})
	}
	slices.SortFunc(out, func(a, b store.LogLine) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, l := range out {
		if limit > 0 && len(ls) >= limit {
			break
		}
		if l.Seq >= from {
			ls = append(ls, l)
		}
	}
	return ls, nil
}

// BySeq returns lines sorted by Seq, keeping the first of lines with the
// same Seq: lines itself if it is so already, as it usually is.
func BySeq(lines []store.LogLine) []store.LogLine {
	sorted := true
	for i := 1; i < len(lines) && sorted; i++ {
		sorted = lines[i-1].Seq < lines[i].Seq
	}
	if sorted {
		return lines
	}
	ls := slices.Clone(lines)
	slices.SortStableFunc(ls, func(a, b store.LogLine) int { return cmp.Compare(a.Seq, b.Seq) })
	return slices.CompactFunc(ls, func(a, b store.LogLine) bool { return a.Seq == b.Seq })
}

// Merge merges old, stored lines, and lines, both by Seq and unique,
// into merged, and returns how many of lines it took: those whose Seq is not
// in old.
func Merge(old, lines []store.LogLine) (merged []store.LogLine, n int) {
	merged = make([]store.LogLine, 0, len(old)+len(lines))
	i := 0
	for _, l := range lines {
		for i < len(old) && old[i].Seq < l.Seq {
			merged = append(merged, old[i])
			i++
		}
		if i < len(old) && old[i].Seq == l.Seq {
			continue
		}
		merged = append(merged, l)
		n++
	}
	return append(merged, old[i:]...), n
}
