package natsbus_test

import (
	"errors"
	"fmt"
	"github.com/oxide-ci/oxide/internal/testkit"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
)

func TestSubscribeWildcards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()

	var (
		queued     = events.RunQueuedSubject("p1")             // run.queued.p1
		started1   = events.RunStartedSubject("p1", "r1")      // run.started.p1.r1
		started2   = events.RunStartedSubject("p2", "r2")      // run.started.p2.r2
		completed1 = events.RunCompletedSubject("p1", "r1")    // run.completed.p1.r1
		stage1     = events.StageStartedSubject("r1", "build") // run.r1.stage.build.started
		step1      = events.StepStartedSubject("r1", "s1")     // run.r1.step.s1.started
		out1       = events.StepOutputSubject("r1", "s1")      // run.r1.step.s1.output
		out2       = events.StepOutputSubject("r2", "s1")      // run.r2.step.s1.output
		beat       = events.AgentHeartbeatSubject("a1")        // agent.a1.heartbeat
		registered = events.AgentRegisteredSubject             // agent.registered
	)
	// fences are published last; each case's wait ends when its fences arrive.
	fences := []string{"run.fence.started", "run.started.fence.fence", "run.r1.fence", "run.r1.step.fence.output", "agent.fence.heartbeat"}
	tests := []struct {
		patterns []string
		want     []string // spec subjects delivered, in publish order
	}{
		// run.started has the pipeline id before the run id, so the
		// "run.*.started" a client might guess matches no spec subject.
		{[]string{"run.*.started"}, nil},
		{[]string{"run.started.>"}, []string{started1, started2}},
		{[]string{"run.started.*.*"}, []string{started1, started2}},
		{[]string{"run.r1.*"}, nil}, // stage and step subjects have five tokens
		{[]string{"run.r1.>"}, []string{stage1, step1, out1}},
		{[]string{"run.*.step.*.output"}, []string{out1, out2}},
		// Everything about run r1, through overlapping patterns, once each.
		{[]string{"run.r1.>", "run.*.*.r1", "run.r1.step.>"}, []string{started1, completed1, stage1, step1, out1}},
		{[]string{"agent.*.heartbeat"}, []string{beat}},
		{[]string{"agent.*"}, []string{registered}},
		{[]string{">"}, []string{queued, started1, started2, completed1, stage1, step1, out1, out2, beat, registered}},
		{[]string{"run.>", "run.>"}, []string{queued, started1, started2, completed1, stage1, step1, out1, out2}},
	}

	publish := func(subject, id string) *jetstream.PubAck {
		t.Helper()
		ack, err := b.js.Publish(ctx, subject, []byte(`{"id":"`+id+`"}`), jetstream.WithMsgID(id))
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	publish(queued, "before") // live only: not delivered

	type sub struct {
		mu  sync.Mutex
		got []string
	}
	subs := make([]*sub, len(tests))
	for i, tt := range tests {
		s := &sub{}
		subs[i] = s
		sn, err := natsbus.Subscribe(ctx, b.js, tt.patterns, func(m natsbus.Msg) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.got = append(s.got, m.Subject)
		})
		if err != nil {
			t.Fatalf("Subscribe(%q): %v", tt.patterns, err)
		}
		t.Cleanup(sn.Stop)
	}

	for i, subject := range []string{queued, started1, started2, completed1, stage1, step1, out1, out2, beat, registered} {
		publish(subject, fmt.Sprint("ev-", i))
	}
	if ack := publish(started1, "ev-1"); !ack.Duplicate { // the relay re-publishing after a crash
		t.Fatalf("re-publish not recognized as a duplicate: %+v", ack)
	}
	for i, f := range fences {
		publish(f, fmt.Sprint("fence-", i))
	}

	for i, tt := range tests {
		want := slices.Clone(tt.want)
		for _, f := range fences {
			if slices.ContainsFunc(tt.patterns, func(p string) bool { return events.MatchSubject(p, f) }) {
				want = append(want, f)
			}
		}
		s := subs[i]
		got := func() []string {
			s.mu.Lock()
			defer s.mu.Unlock()
			return slices.Clone(s.got)
		}
		testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%q to deliver %q", tt.patterns, want), func() bool {
			return len(got()) >= len(want)
		})
		g := got()
		if len(tt.patterns) == 1 { // one consumer: stream order
			if !slices.Equal(g, want) {
				t.Errorf("%q delivered %q, want %q", tt.patterns, g, want)
			}
		} else if !slices.Equal(slices.Sorted(slices.Values(g)), slices.Sorted(slices.Values(want))) {
			t.Errorf("%q delivered %q, want %q in any order", tt.patterns, g, want)
		}
	}
}

func TestSubscribeStop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	var mu sync.Mutex
	n := 0
	s, err := natsbus.Subscribe(ctx, b.js, []string{"agent.>"}, func(natsbus.Msg) {
		mu.Lock()
		defer mu.Unlock()
		n++
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.Publish(ctx, events.AgentRegisteredSubject, nil); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "one delivery", func() bool { mu.Lock(); defer mu.Unlock(); return n == 1 })
	s.Stop()
	for range 10 {
		if _, err := b.js.Publish(ctx, events.AgentDisconnectedSubject, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A new subscription sees the later events, the stopped one does not.
	fence := make(chan struct{})
	var once sync.Once
	s2, err := natsbus.Subscribe(ctx, b.js, []string{"agent.>"}, func(natsbus.Msg) { once.Do(func() { close(fence) }) })
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	if _, err := b.js.Publish(ctx, events.AgentRegisteredSubject, nil); err != nil {
		t.Fatal(err)
	}
	<-fence
	mu.Lock()
	defer mu.Unlock()
	if n != 1 {
		t.Errorf("%d deliveries after Stop", n-1)
	}
}

func TestSubscribeRejects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		patterns []string
		err      string
	}{
		{nil, "no patterns"},
		{[]string{""}, "empty"},
		{[]string{"run.*.started", "run..started"}, "token 2 is empty"},
		{[]string{"run.>.output"}, `">" must be the last token`},
		{[]string{"run.step*"}, "wildcard inside token"},
		{[]string{"deploy.>"}, "matches no event subject"},
		{[]string{"run"}, "matches no event subject"},
	}
	for _, tt := range tests {
		_, err := natsbus.Subscribe(t.Context(), b.js, tt.patterns, func(natsbus.Msg) {})
		if !errors.Is(err, events.ErrInvalidPattern) || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Subscribe(%q) = %v, want ErrInvalidPattern mentioning %q", tt.patterns, err, tt.err)
		}
	}
}
