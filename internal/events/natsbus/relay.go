package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
)

// Outbox is the transactional outbox the relay drains. The relay calls it
// from one goroutine; several relays (one per server replica) may drain the
// same outbox, since the stream stores each event id once.
type Outbox interface {
	// Pending returns up to limit unpublished events, oldest first.
	Pending(ctx context.Context, limit int) ([]events.OutboxEvent, error)
	// MarkPublished marks events published; marking twice is harmless.
	MarkPublished(ctx context.Context, ids []string) error
}

// RelayConfig tunes a Relay; zero fields take the defaults shown.
type RelayConfig struct {
	// BatchSize is how many events one Pending call returns at most, and so
	// how many publishes are in flight at once (256).
	BatchSize int
	// PollInterval is how long the relay waits for Notify before it looks
	// at the outbox again (200ms).
	PollInterval time.Duration
	// Timeout bounds the wait for a batch's acks and for marking it (10s).
	Timeout time.Duration
	// MaxBackoff caps the wait after a failure, which doubles from 50ms (5s).
	MaxBackoff time.Duration
	// Logger receives the failures (slog.Default()).
	Logger *slog.Logger
}

// RelayStats are the relay's counters since it was made.
type RelayStats struct {
	Published  uint64 // events the stream stored
	Duplicates uint64 // events the stream already had (PubAck.Duplicate): re-publishes after a crash or a failed mark
	Failures   uint64 // drain attempts that failed and were retried after a back-off
}

// Relay publishes the outbox's events to the OXIDE stream, oldest first, each
// with its id as Nats-Msg-Id, and marks them published once the stream has
// acknowledged them. An event is never dropped: after any failure the relay
// backs off and publishes the unmarked events again, and the stream discards
// those it already has, provided it had them no longer than DuplicateWindow
// ago: a batch published but not marked before a crash is stored twice only
// if the relay comes back more than DuplicateWindow later.
//
// Order holds as long as publishing succeeds; when some of a batch's
// publishes fail, the retried ones land after the others.
type Relay struct {
	js     jetstream.JetStream
	outbox Outbox
	cfg    RelayConfig
	notify chan struct{}

	published, duplicates, failures atomic.Uint64

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// NewRelay makes a relay from outbox to the OXIDE stream, which must exist
// (EnsureStream).
func NewRelay(js jetstream.JetStream, outbox Outbox, cfg RelayConfig) *Relay {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Relay{js: js, outbox: outbox, cfg: cfg, notify: make(chan struct{}, 1)}
}

// Start starts relaying in a goroutine until ctx ends or Stop is called.
// Starting a started relay does nothing.
func (r *Relay) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done != nil {
		return nil
	}
	ctx, r.cancel = context.WithCancel(ctx)
	r.done = make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		r.run(ctx)
	}(r.done)
	return nil
}

// Stop stops the relay and waits for it: publishes in flight are awaited
// and the acknowledged ones marked (each within Timeout), the rest stay
// pending for the next start.
func (r *Relay) Stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel, r.done = nil, nil
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Notify tells the relay that events were committed to the outbox, so that
// it looks now instead of at its next poll. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Published:  r.published.Load(),
		Duplicates: r.duplicates.Load(),
		Failures:   r.failures.Load(),
	}
}

func (r *Relay) run(ctx context.Context) {
	var backoff time.Duration
	for {
		n, err := r.drain(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.failures.Add(1)
			backoff = min(max(2*backoff, 50*time.Millisecond), r.cfg.MaxBackoff)
			r.cfg.Logger.Warn("outbox relay failed, retrying", "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if n == r.cfg.BatchSize {
			continue // likely more pending
		}
		select {
		case <-ctx.Done():
			return
		case <-r.notify:
		case <-time.After(r.cfg.PollInterval):
		}
	}
}

// drain relays one batch and returns its size.
func (r *Relay) drain(ctx context.Context) (int, error) {
	evs, err := r.outbox.Pending(ctx, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	if len(evs) == 0 {
		return 0, nil
	}
	acked, err := r.publish(ctx, evs)
	if len(acked) > 0 {
		// Marking survives Stop: what the stream has should not be sent again.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Timeout)
		defer cancel()
		if merr := r.outbox.MarkPublished(mctx, acked); merr != nil {
			err = errors.Join(err, fmt.Errorf("mark published: %w", merr))
		}
	}
	return len(evs), err
}

// publish sends evs asynchronously, awaits their acks and returns the ids
// the stream acknowledged, with the first error.
func (r *Relay) publish(ctx context.Context, evs []events.OutboxEvent) ([]string, error) {
	var err error
	futures := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, ev := range evs {
		if err = ctx.Err(); err != nil {
			break
		}
		msg := &nats.Msg{Subject: ev.Subject, Data: ev.Payload}
		f, perr := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(ev.ID), jetstream.WithExpectStream(StreamName))
		if perr != nil {
			err = fmt.Errorf("publish event %s to %q: %w", ev.ID, ev.Subject, perr)
			break
		}
		futures = append(futures, f)
	}

	// Acks are awaited even after Stop, so that they can be marked.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Timeout)
	defer cancel()
	acked := make([]string, 0, len(futures))
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				r.duplicates.Add(1)
			} else {
				r.published.Add(1)
			}
			acked = append(acked, evs[i].ID)
		case ferr := <-f.Err():
			if err == nil {
				err = fmt.Errorf("publish event %s to %q: %w", evs[i].ID, evs[i].Subject, ferr)
			}
		case <-wctx.Done():
			return acked, errors.Join(err, fmt.Errorf("%d of %d acks not received within %s", len(futures)-i, len(futures), r.cfg.Timeout))
		}
	}
	return acked, err
}
