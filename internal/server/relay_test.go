package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store/postgres/pgtest"
	"github.com/oxide-ci/oxide/internal/testkit"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events/natsbus"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// crashingOutbox marks its first batch and then fails every mark, as a
// process that dies between the stream's ack and the outbox's update.
type crashingOutbox struct {
	natsbus.Outbox
	marks   atomic.Int32
	once    sync.Once
	crashed chan struct{} // closed at the first failed mark
}

var errCrash = errors.New("crashed before marking the batch published")

func (c *crashingOutbox) MarkPublished(ctx context.Context, ids []string) error {
	if c.marks.Add(1) == 1 {
		return c.Outbox.MarkPublished(ctx, ids)
	}
	c.once.Do(func() { close(c.crashed) })
	return errCrash
}

// TestRelayCrashLosesNothing appends events through state changes, relays
// them with a relay that "crashes" after its first batch (published, not
// marked), then with a fresh relay: the stream holds every event exactly
// once and the outbox has nothing pending.
func TestRelayCrashLosesNothing(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "oxide.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testRelayCrash(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		st, err := postgres.Open(t.Context(), pgtest.DSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testRelayCrash(t, st)
	})
}

func testRelayCrash(t *testing.T, st store.Store) {
	const n, batch = 50, 10
	ctx := t.Context()
	for i := range n {
		if _, err := st.Pipelines().Create(ctx, store.Pipeline{Name: fmt.Sprintf("p%02d", i), Definition: contractPipeline}); err != nil {
			t.Fatal(err)
		}
	}
	ob := outbox{st}
	pending, err := ob.Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != n {
		t.Fatalf("%d events pending, want %d (one per pipeline created)", len(pending), n)
	}
	subjectOf := map[string]string{} // event id → subject
	for _, ev := range pending {
		subjectOf[ev.ID] = ev.Subject
	}

	emb, err := natsbus.StartEmbedded(ctx, t.TempDir(), natsbus.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := natsbus.EnsureStream(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := natsbus.RelayConfig{BatchSize: batch, PollInterval: 20 * time.Millisecond, Logger: quietLogger()}

	// The first relay publishes two batches and marks only the first.
	crashing := &crashingOutbox{Outbox: ob, crashed: make(chan struct{})}
	r1 := natsbus.NewRelay(js, crashing, cfg)
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-crashing.crashed:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not reach its second mark within 10s")
	}
	r1.Stop()
	if left, err := ob.Pending(ctx, 0); err != nil || len(left) != n-batch {
		t.Fatalf("after the crash: %d pending (%v), want %d", len(left), err, n-batch)
	}

	// A fresh relay on the plain outbox finishes the job.
	r2 := natsbus.NewRelay(js, ob, cfg)
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 10*time.Second, func() (bool, string) {
		left, err := ob.Pending(ctx, 0)
		return err == nil && len(left) == 0, fmt.Sprintf("%d pending (%v)", len(left), err)
	})
	r2.Stop()
	// The batch published before the crash came again and was dropped.
	if s := r2.Stats(); s.Duplicates != batch || s.Published != n-2*batch {
		t.Errorf("second relay: %+v, want %d duplicates and %d published", s, batch, n-2*batch)
	}

	// The stream holds each event once, on its own subject.
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Errorf("stream holds %d messages, want %d", info.State.Msgs, n)
	}
	seenID, seenSubject := map[string]int{}, map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		id := m.Header.Get(nats.MsgIdHdr)
		seenID[id]++
		seenSubject[m.Subject]++
		if want, ok := subjectOf[id]; !ok {
			t.Errorf("message %d: Nats-Msg-Id %q is no outbox event", seq, id)
		} else if m.Subject != want {
			t.Errorf("message %d: subject %q, want %q", seq, m.Subject, want)
		}
	}
	for id := range subjectOf {
		if seenID[id] != 1 {
			t.Errorf("event %s is in the stream %d times, want once", id, seenID[id])
		}
	}
	for subj, c := range seenSubject {
		if c != 1 {
			t.Errorf("subject %s has %d messages, want 1", subj, c)
		}
	}
}
