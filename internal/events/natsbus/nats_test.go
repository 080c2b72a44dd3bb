package natsbus_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
)

func TestEnsureStreamIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t) // has called EnsureStream once
	ctx := t.Context()

	// Drift from the configuration is repaired by the next EnsureStream.
	cfg := b.stream.CachedInfo().Config
	cfg.MaxAge = time.Hour
	if _, err := b.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err := natsbus.EnsureStream(ctx, b.js, 1)
		if err != nil {
			t.Fatal(err)
		}
		got := s.CachedInfo().Config
		if got.Name != natsbus.StreamName || !slices.Equal(got.Subjects, events.StreamSubjects()) ||
			got.MaxAge != natsbus.MaxAge || got.Duplicates != natsbus.DuplicateWindow ||
			got.Storage != jetstream.FileStorage || got.Replicas != 1 {
			t.Errorf("stream config = %+v", got)
		}
	}
	names := b.js.StreamNames(ctx)
	var n int
	for range names.Name() {
		n++
	}
	if names.Err() != nil || n != 1 {
		t.Errorf("%d streams (%v), want 1", n, names.Err())
	}
}

func TestEmbeddedLogsWhenAsked(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, nil))
	b := &bundle{dir: t.TempDir()}
	b.start(t, natsbus.EmbeddedConfig{Logger: logger})
	b.stop()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "component=nats") || !strings.Contains(buf.String(), "Server is ready") {
		t.Errorf("server log:\n%s", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// The store and the deduplication state survive a server restart: after a
// crash, events re-published to a restarted server are recognized.
func TestRestartKeepsMessagesAndDeduplication(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	for i := range 10 {
		if _, err := b.js.Publish(ctx, events.RunQueuedSubject("p1"), []byte("{}"), jetstream.WithMsgID(fmt.Sprint("id-", i))); err != nil {
			t.Fatal(err)
		}
	}
	b.stop()
	b.start(t, natsbus.EmbeddedConfig{})

	if got := storedIDs(t, b.js); len(got) != 10 {
		t.Fatalf("after restart the stream holds %q, want 10 messages", got)
	}
	ack, err := b.js.Publish(ctx, events.RunQueuedSubject("p1"), []byte("{}"), jetstream.WithMsgID("id-2"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Errorf("re-publish after restart: ack %+v, want a duplicate", ack)
	}
}
