package storetest

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// Bench sizes: the step prints a million lines, which agents send in
// batches of at most 100 and the API reads in pages of 1000.
const (
	benchLines     = 1_000_000
	benchBatch     = 100
	benchReadLimit = 1000
)

// BenchLogs measures Logs on a driver: Append stores a million lines of one
// job in batches of 100, each its own call (its own transaction), as agents
// send them; Read reads them back in pages of 1000 with the after cursor, as
// the API does. Both report lines/s. The lines are a compiler's, which repeat
// themselves as most logs do; AppendRandom stores lines of random text
// instead, which do not compress. open returns an empty, migrated store
// closed with b.
//
//	go test ./internal/store/sqlite -run '^$' -bench Logs -benchtime 3x
func BenchLogs(b *testing.B, open func(b *testing.B) store.Store) {
	lines := benchLogLines(false)
	b.Run("Append", func(b *testing.B) { benchAppend(b, open(b), lines) })
	b.Run("AppendRandom", func(b *testing.B) { benchAppend(b, open(b), benchLogLines(true)) })
	b.Run("Read", func(b *testing.B) {
		ctx := context.Background()
		st := open(b)
		j := benchJob(b, st)
		appendAll(b, st, j.ID, lines)
		b.ReportAllocs()
		b.ResetTimer()
		var total time.Duration
		for range b.N {
			start := time.Now()
			n, after := 0, int64(0)
			for {
				page, err := st.Logs().Read(ctx, j.ID, after, benchReadLimit)
				if err != nil {
					b.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				n += len(page)
				after = page[len(page)-1].Seq
			}
			total += time.Since(start)
			if n != len(lines) {
				b.Fatalf("read %d lines, want %d", n, len(lines))
			}
		}
		b.ReportMetric(float64(b.N*len(lines))/total.Seconds(), "lines/s")
	})
}

func benchAppend(b *testing.B, st store.Store, lines []store.LogLine) {
	b.ReportAllocs()
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		b.StopTimer()
		j := benchJob(b, st) // a new job each round: every line is new
		b.StartTimer()
		start := time.Now()
		appendAll(b, st, j.ID, lines)
		total += time.Since(start)
	}
	b.ReportMetric(float64(b.N*len(lines))/total.Seconds(), "lines/s")
}

// benchLogLines makes the lines of a chatty build step, of 60 characters or
// so: a compiler's, or random ones.
func benchLogLines(random bool) []store.LogLine {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 45)
	lines := make([]store.LogLine, benchLines)
	for i := range lines {
		text := fmt.Sprintf("[%7d] compiling package example.com/module/pkg%d: ok (%d ms)", i+1, i%997, i%89)
		if random {
			for k := range buf {
				buf[k] = byte(rng.Uint32())
			}
			text = base64.StdEncoding.EncodeToString(buf)
		}
		lines[i] = store.LogLine{
			Seq:    int64(i + 1),
			StepID: "build",
			Stream: "stdout",
			Text:   text,
			Time:   at.Add(time.Duration(i) * time.Microsecond),
		}
	}
	return lines
}

func benchJob(b *testing.B, st store.Store) store.Job {
	js, err := st.Jobs().Enqueue(context.Background(), store.Job{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return js[0]
}

// appendAll appends lines in batches of benchBatch, checking the counts.
func appendAll(b *testing.B, st store.Store, jobID string, lines []store.LogLine) {
	ctx := context.Background()
	for i := 0; i < len(lines); i += benchBatch {
		batch := lines[i:min(i+benchBatch, len(lines))]
		n, err := st.Logs().Append(ctx, jobID, batch)
		if err != nil {
			b.Fatal(err)
		}
		if n != len(batch) {
			b.Fatalf("Append stored %d of %d lines", n, len(batch))
		}
	}
}
