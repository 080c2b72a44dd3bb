package natsbus

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
)

// Msg is one event delivered to a subscription.
type Msg struct {
	Subject string // the channel, e.g. run.started.{pipeline_id}.{run_id}
	Payload []byte // the event's JSON
}

// Subscription delivers the events that the OXIDE stream stores from the
// moment Subscribe returns (live only: no history) on subjects matching its
// patterns.
type Subscription struct {
	mu       sync.Mutex // serializes fn and guards stopped
	stopped  bool
	consumes []jetstream.ConsumeContext
}

// Subscribe delivers to fn every event stored in the OXIDE stream whose
// subject matches one of patterns, NATS-style ("run.*.step.*.output",
// "run.<id>.>"). Each stored event is delivered once even when several
// patterns match it, and a re-publish the stream dropped as a duplicate is
// not delivered. fn is called from one goroutine at a time and must not
// block for long: it holds up the subscription (and Stop).
//
// ctx bounds setting the subscription up; it lasts until Stop. Each distinct
// pattern is an ordered JetStream consumer that starts at new messages and,
// after a reconnect, resumes after the last message it delivered. A pattern
// that is invalid or that no stream subject can match is an error wrapping
// events.ErrInvalidPattern.
func Subscribe(ctx context.Context, js jetstream.JetStream, patterns []string, fn func(Msg)) (*Subscription, error) {
	if len(patterns) == 0 {
		return nil, fmt.Errorf("%w: no patterns", events.ErrInvalidPattern)
	}
	var ps []string
	for _, p := range patterns {
		if err := events.ValidatePattern(p); err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(events.StreamSubjects(), func(s string) bool { return overlap(p, s) }) {
			return nil, fmt.Errorf("%w %q: matches no event subject (%s)", events.ErrInvalidPattern, p, strings.Join(events.StreamSubjects(), ", "))
		}
		if !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}

	s := &Subscription{}
	for i := range ps {
		cc, err := s.consume(ctx, js, ps, i, fn)
		if err != nil {
			s.Stop()
			return nil, fmt.Errorf("subscribe %q: %w", ps[i], err)
		}
		s.consumes = append(s.consumes, cc)
	}
	return s, nil
}

// consume starts the consumer of ps[i], which delivers the messages that no
// earlier pattern matches.
func (s *Subscription) consume(ctx context.Context, js jetstream.JetStream, ps []string, i int, fn func(Msg)) (jetstream.ConsumeContext, error) {
	cons, err := js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{ps[i]},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		// The server forgets a stopped subscription's consumer after this.
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	return cons.Consume(func(m jetstream.Msg) {
		for _, q := range ps[:i] {
			if events.MatchSubject(q, m.Subject()) {
				return
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.stopped {
			fn(Msg{Subject: m.Subject(), Payload: m.Data()})
		}
	})
}

// Stop ends the subscription; fn is not called once Stop has returned.
func (s *Subscription) Stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	for _, cc := range s.consumes {
		cc.Stop()
	}
}

// overlap reports whether some subject matches both valid patterns a and b.
func overlap(a, b string) bool {
	for {
		at, arest, amore := strings.Cut(a, ".")
		bt, brest, bmore := strings.Cut(b, ".")
		switch {
		case at == ">" || bt == ">":
			return true
		case at != "*" && bt != "*" && at != bt:
			return false
		case !amore || !bmore:
			return amore == bmore
		}
		a, b = arest, brest
	}
}
