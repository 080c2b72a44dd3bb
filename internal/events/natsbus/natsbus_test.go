package natsbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
)

// bundle is a running embedded server with the OXIDE stream.
type bundle struct {
	dir    string
	srv    *natsbus.Embedded
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

func setup(t testing.TB) *bundle {
	t.Helper()
	b := &bundle{dir: t.TempDir()}
	b.start(t, natsbus.EmbeddedConfig{})
	return b
}

// start starts the server on b.dir and connects to it in-process.
func (b *bundle) start(t testing.TB, cfg natsbus.EmbeddedConfig) {
	t.Helper()
	ctx := t.Context()
	srv, err := natsbus.StartEmbedded(ctx, b.dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect()
	if err != nil {
		srv.Shutdown()
		t.Fatal(err)
	}
	b.srv, b.nc = srv, nc
	t.Cleanup(b.stop)
	if b.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if b.stream, err = natsbus.EnsureStream(ctx, b.js, 1); err != nil {
		t.Fatal(err)
	}
}

// stop closes the connection and shuts the server down; stopping twice is harmless.
func (b *bundle) stop() {
	b.nc.Close()
	b.srv.Shutdown()
}

// storedIDs returns the Nats-Msg-Id of every message in the stream, in order.
func storedIDs(t testing.TB, js jetstream.JetStream) []string {
	t.Helper()
	ctx := t.Context()
	s, err := js.Stream(ctx, natsbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return ids
}

// memOutbox is a real in-memory implementation of natsbus.Outbox, standing
// in for the store's outbox table: events are appended in order and stay
// pending until marked. It can crash: the crashAt-th MarkPublished call
// fails, as if the process died between publishing a batch and committing
// the mark, and every later call fails until revive.
type memOutbox struct {
	mu        sync.Mutex
	events    []events.OutboxEvent
	marked    map[string]bool
	oldest    int // index before which every event is marked
	markCalls int
	crashAt   int
	down      bool
	crashed   chan struct{}
}

var errCrashed = errors.New("outbox crashed")

func newMemOutbox() *memOutbox {
	return &memOutbox{marked: map[string]bool{}, crashed: make(chan struct{})}
}

// add appends n step output events.
func (o *memOutbox) add(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for range n {
		i := len(o.events)
		ev := events.StepOutput{
			RunID: "run-1", StageName: "build", StepID: fmt.Sprintf("step-%d", i%3),
			Stream: "stdout", Line: fmt.Sprintf("compiling package %d of many", i), LineNumber: i + 1,
			Timestamp: time.Unix(1700000000, int64(i)).UTC(),
		}
		payload, err := json.Marshal(ev)
		if err != nil {
			panic(err)
		}
		o.events = append(o.events, events.OutboxEvent{
			ID:        fmt.Sprintf("ev-%07d", i),
			Subject:   events.StepOutputSubject(ev.RunID, ev.StepID),
			Payload:   payload,
			CreatedAt: ev.Timestamp,
		})
	}
}

func (o *memOutbox) Pending(_ context.Context, limit int) ([]events.OutboxEvent, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		return nil, errCrashed
	}
	for o.oldest < len(o.events) && o.marked[o.events[o.oldest].ID] {
		o.oldest++
	}
	var out []events.OutboxEvent
	for _, ev := range o.events[o.oldest:] {
		if len(out) == limit {
			break
		}
		if !o.marked[ev.ID] {
			out = append(out, ev)
		}
	}
	return out, nil
}

func (o *memOutbox) MarkPublished(_ context.Context, ids []string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		return errCrashed
	}
	o.markCalls++
	if o.markCalls == o.crashAt {
		o.down = true
		close(o.crashed)
		return errCrashed
	}
	for _, id := range ids {
		o.marked[id] = true
	}
	return nil
}

func (o *memOutbox) revive() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down = false
}

// ids returns the ids of all events and how many are marked.
func (o *memOutbox) ids() (ids []string, marked int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ev := range o.events {
		ids = append(ids, ev.ID)
	}
	return ids, len(o.marked)
}

// allMarked reports whether every event is marked published.
func (o *memOutbox) allMarked() bool {
	ids, marked := o.ids()
	return marked == len(ids)
}

var _ natsbus.Outbox = (*memOutbox)(nil)
