package storetest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// logLine is the line with Seq seq that the tests below append: its text,
// step and attempt vary with seq, so that a line read back shows which one
// it is.
func logLine(seq int64) store.LogLine {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(seq) * 1001 * time.Microsecond)
	l := store.LogLine{Seq: seq, Attempt: 1 + int(seq/40%3), StepID: fmt.Sprintf("step-%d", seq/50), Stream: "stdout",
		Text: fmt.Sprintf("line %d", seq), Time: at}
	switch seq % 7 {
	case 0:
		l.Stream = "stderr"
	case 1:
		l.StepID = "" // a line of no step
	case 2:
		l.Text = ""
	case 3:
		l.Text = fmt.Sprintf("ünïcødé ✓ \t\"quoted\" \\ line %d\r", seq)
	}
	return l
}

func logLines(seqs ...int64) []store.LogLine {
	ls := make([]store.LogLine, len(seqs))
	for i, s := range seqs {
		ls[i] = logLine(s)
	}
	return ls
}

func seqRange(from, to int64) []int64 {
	var s []int64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// logModel is what a job's log must hold: the first line appended with each
// Seq.
type logModel map[int64]store.LogLine

// append appends ls to st and checks the count against the model.
func (m logModel) append(t *testing.T, st store.Tx, jobID string, ls []store.LogLine) {
	t.Helper()
	want := 0
	for _, l := range ls {
		if _, ok := m[l.Seq]; !ok {
			m[l.Seq] = l
			want++
		}
	}
	n, err := st.Logs().Append(context.Background(), jobID, ls)
	noErr(t, err)
	if n != want {
		t.Fatalf("Append(%d lines, seqs %d…%d) stored %d, want %d", len(ls), ls[0].Seq, ls[len(ls)-1].Seq, n, want)
	}
}

// lines returns the model's lines with Seq > after, by Seq, up to limit.
func (m logModel) lines(after int64, limit int) []store.LogLine {
	var ls []store.LogLine
	for _, l := range m {
		if l.Seq > after {
			ls = append(ls, l)
		}
	}
	slices.SortFunc(ls, func(a, b store.LogLine) int { return cmp.Compare(a.Seq, b.Seq) })
	if limit > 0 && len(ls) > limit {
		ls = ls[:limit]
	}
	if ls == nil {
		ls = []store.LogLine{}
	}
	return ls
}

// check reads the whole log, and pages of it from several cursors.
func (m logModel) check(t *testing.T, st store.Tx, jobID string) {
	t.Helper()
	ctx := context.Background()
	read := func(after int64, limit int) []store.LogLine {
		t.Helper()
		ls, err := st.Logs().Read(ctx, jobID, after, limit)
		noErr(t, err)
		if ls == nil {
			ls = []store.LogLine{}
		}
		return ls
	}
	equal(t, read(0, 0), m.lines(0, 0))
	all := m.lines(-1, 0)
	if len(all) == 0 {
		return
	}
	last := all[len(all)-1].Seq
	for after := int64(-1); after <= last+1; after += max(1, last/17) {
		for _, limit := range []int{1, 7, 100, 1000} {
			equal(t, read(after, limit), m.lines(after, limit))
		}
	}
	// Paging through with the cursor yields every line once.
	var paged []store.LogLine
	for after := int64(0); ; {
		page := read(after, 33)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Seq
	}
	if paged == nil {
		paged = []store.LogLine{}
	}
	equal(t, paged, m.lines(0, 0))
}

// testLogsResend: agents resend what was not acknowledged, in any overlap
// with what is stored, and lines may come out of order or fill gaps.
func testLogsResend(t *testing.T, open OpenFunc) {
	st := openStore(t, open)
	j := enqueue(t, st, store.Job{Name: "j"})[0]
	m := logModel{}
	m.append(t, st, j.ID, logLines(seqRange(1, 600)...)) // more than fits in one row, if the store has rows of lines
	m.check(t, st, j.ID)
	m.append(t, st, j.ID, logLines(seqRange(550, 700)...))   // overlaps the end
	m.append(t, st, j.ID, logLines(seqRange(1000, 1010)...)) // leaves a gap
	m.append(t, st, j.ID, logLines(seqRange(800, 805)...))   // in the gap
	m.append(t, st, j.ID, logLines(seqRange(700, 1005)...))  // fills the gaps around 800…805, overlaps both ends
	m.append(t, st, j.ID, logLines(seqRange(1, 1010)...))    // all of it again
	m.check(t, st, j.ID)

	// Out of order, with repeated Seqs: the first of those is stored.
	ls := logLines(2000, 1999, 2001, 1999, 1500)
	ls[3].Text = "a second 1999"
	m.append(t, st, j.ID, ls)
	m.append(t, st, j.ID, logLines(0)) // before all others
	m.check(t, st, j.ID)

	// A line without a time is stamped with the store's.
	n, err := st.Logs().Append(context.Background(), j.ID, []store.LogLine{{Seq: 3000, Stream: "system", Text: "now"}})
	noErr(t, err)
	equal(t, n, 1)
	got, err := st.Logs().Read(context.Background(), j.ID, 2999, 0)
	noErr(t, err)
	if len(got) != 1 || got[0].Text != "now" {
		t.Fatalf("Read after 2999 = %+v", got)
	}
	fresh(t, "line time", got[0].Time)

	// Other jobs' logs are apart.
	k := enqueue(t, st, store.Job{Name: "k"})[0]
	mk := logModel{}
	mk.append(t, st, k.ID, logLines(seqRange(500, 520)...))
	mk.check(t, st, k.ID)
	got, err = st.Logs().Read(context.Background(), "no-such-job", 0, 0)
	noErr(t, err)
	equal(t, len(got), 0)
}

// testLogsAttempts: the lines of a retried job's attempts, numbered as
// workers number them (the attempt in Seq's high bits), are all stored, each
// with its attempt, and read back attempt after attempt.
func testLogsAttempts(t *testing.T, open OpenFunc) {
	st := openStore(t, open)
	j := enqueue(t, st, store.Job{Name: "retried"})[0]
	attempt := func(n int, from, to int64) []store.LogLine {
		var ls []store.LogLine
		for i := from; i <= to; i++ {
			l := logLine(i)
			l.Seq, l.Attempt = int64(n)<<32+i, n
			ls = append(ls, l)
		}
		return ls
	}
	m := logModel{}
	m.append(t, st, j.ID, attempt(1, 1, 300))
	// The agent is lost; the control plane writes the system line that
	// opens attempt 2, which numbers its lines from 1 again.
	m.append(t, st, j.ID, []store.LogLine{{Seq: 2 << 32, Attempt: 2, Stream: "system", Text: "attempt 2 of 3 after agent lost",
		Time: time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC)}})
	m.append(t, st, j.ID, attempt(2, 1, 300))
	m.append(t, st, j.ID, attempt(1, 250, 310)) // attempt 1's agent resends, late
	m.check(t, st, j.ID)
	ls, err := st.Logs().Read(context.Background(), j.ID, 0, 0)
	noErr(t, err)
	per := map[int]int{}
	for _, l := range ls {
		per[l.Attempt]++
	}
	equal(t, per, map[int]int{1: 310, 2: 301})
	if l := ls[310]; l.Attempt != 2 || l.Stream != "system" {
		t.Fatalf("line after attempt 1's: %+v, want attempt 2's system line", l)
	}
}

// testLogsRandom appends random overlapping batches, as agents that
// reconnect at random would, and checks every count and read against a model.
func testLogsRandom(t *testing.T, open OpenFunc) {
	st := openStore(t, open)
	j := enqueue(t, st, store.Job{Name: "j"})[0]
	rng := rand.New(rand.NewPCG(1, 2))
	m := logModel{}
	next := int64(1)
	for round := range 300 {
		var seqs []int64
		switch rng.IntN(4) {
		case 0, 1: // new lines, and maybe some before them again
			k := 1 + rng.IntN(150)
			from := next - int64(rng.IntN(20))
			seqs = seqRange(max(1, from), next+int64(k))
			next += int64(k) + 1
		case 2: // a resend of a random range
			from := 1 + rng.Int64N(next)
			seqs = seqRange(from, from+rng.Int64N(300))
		case 3: // scattered lines, shuffled, some repeated
			for range 1 + rng.IntN(40) {
				seqs = append(seqs, 1+rng.Int64N(next+50))
			}
		}
		if round%2 == 0 {
			rng.Shuffle(len(seqs), func(a, b int) { seqs[a], seqs[b] = seqs[b], seqs[a] })
		}
		m.append(t, st, j.ID, logLines(seqs...))
		if round%50 == 49 {
			m.check(t, st, j.ID)
		}
	}
	m.check(t, st, j.ID)
}

// testLogsLarge stores lines longer than a page and more lines than a
// batch, as one Append.
func testLogsLarge(t *testing.T, open OpenFunc) {
	st := openStore(t, open)
	j := enqueue(t, st, store.Job{Name: "j"})[0]
	m := logModel{}
	ls := logLines(seqRange(1, 5000)...)
	for i := range ls {
		if i%1000 == 0 {
			ls[i].Text = strings.Repeat(fmt.Sprintf("long line %d ", i), 30000) // ~400 KB
		}
	}
	m.append(t, st, j.ID, ls)
	m.append(t, st, j.ID, logLines(seqRange(4000, 6000)...))
	m.check(t, st, j.ID)
}

// testLogsTx: Append and Read join a transaction; lines appended in one
// that rolls back are not stored; deleting the job deletes its lines.
func testLogsTx(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	p, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	noErr(t, err)
	r, err := st.Runs().Create(ctx, store.Run{PipelineID: p.ID})
	noErr(t, err)
	j := enqueue(t, st, store.Job{RunID: r.ID, Name: "j"})[0]

	m := logModel{}
	// Inside InTx first: before any Append outside one.
	noErr(t, st.InTx(ctx, func(tx store.Tx) error {
		m.append(t, tx, j.ID, logLines(seqRange(1, 10)...))
		m.append(t, tx, j.ID, logLines(seqRange(5, 15)...))
		m.check(t, tx, j.ID)
		return nil
	}))
	m.check(t, st, j.ID)
	oops := errors.New("oops")
	err = st.InTx(ctx, func(tx store.Tx) error {
		n, err := tx.Logs().Append(ctx, j.ID, logLines(seqRange(10, 30)...))
		noErr(t, err)
		equal(t, n, 15)
		return oops
	})
	wantErr(t, err, oops)
	m.check(t, st, j.ID)
	// A failed Append inside InTx leaves the transaction usable.
	noErr(t, st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.Logs().Append(ctx, "no-such-job", logLines(1))
		wantErr(t, err, store.ErrNotFound)
		m.append(t, tx, j.ID, logLines(seqRange(16, 20)...))
		return nil
	}))
	m.append(t, st, j.ID, logLines(seqRange(1, 25)...))
	m.check(t, st, j.ID)

	noErr(t, st.Pipelines().Delete(ctx, p.ID))
	ls, err := st.Logs().Read(ctx, j.ID, 0, 0)
	noErr(t, err)
	equal(t, len(ls), 0)
	_, err = st.Logs().Append(ctx, j.ID, logLines(1))
	wantErr(t, err, store.ErrNotFound)
}

// testLogsConcurrent: servers append overlapping batches of one job at once,
// as an agent that reconnects to another server while the first one still
// stores what it sent would. Every line is stored once, and counted once.
func testLogsConcurrent(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	stores := []store.Store{openStore(t, open), openStore(t, open)}
	j := enqueue(t, stores[0], store.Job{Name: "j"})[0]
	const lines, batch, writers = 3000, 100, 6
	var wg sync.WaitGroup
	counts := make([]int, writers)
	errs := make([]error, writers)
	for w := range writers {
		wg.Go(func() {
			st := stores[w%len(stores)]
			// Writers start at different lines and wrap around, so
			// that their batches overlap in every way; writer 0 sends
			// all lines.
			for i := range lines / batch {
				from := int64((i+w*7)%(lines/batch)*batch + w*13%batch + 1)
				n, err := st.Logs().Append(ctx, j.ID, logLines(seqRange(from, min(from+batch-1, lines))...))
				if err != nil {
					errs[w] = err
					return
				}
				counts[w] += n
			}
		})
	}
	wg.Wait()
	noErr(t, errors.Join(errs...))
	m := logModel{}
	for _, l := range logLines(seqRange(1, lines)...) {
		m[l.Seq] = l
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	got, err := stores[1].Logs().Read(ctx, j.ID, 0, 0)
	noErr(t, err)
	if total != len(got) {
		t.Fatalf("Appends counted %d lines (%v), Read returns %d", total, counts, len(got))
	}
	// Writer 0 sends every line.
	equal(t, got, m.lines(0, 0))
}
