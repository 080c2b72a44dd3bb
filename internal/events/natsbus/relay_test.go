package natsbus_test

import (
	"fmt"
	"github.com/oxide-ci/oxide/internal/testkit"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events/natsbus"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func startRelay(t testing.TB, js jetstream.JetStream, o natsbus.Outbox, cfg natsbus.RelayConfig) *natsbus.Relay {
	t.Helper()
	cfg.Logger = quiet
	r := natsbus.NewRelay(js, o, cfg)
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// checkExactlyOnce checks that the stream holds every outbox event once, in order.
func checkExactlyOnce(t *testing.T, js jetstream.JetStream, o *memOutbox) {
	t.Helper()
	want, _ := o.ids()
	if got := storedIDs(t, js); !slices.Equal(got, want) {
		t.Errorf("stream holds %d messages, want the %d outbox events once each, in order\ngot  %q\nwant %q",
			len(got), len(want), head(got), head(want))
	}
}

func head(s []string) []string { return s[:min(len(s), 8)] }

func TestRelayPublishesInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := newMemOutbox()
	o.add(1000)
	r := startRelay(t, b.js, o, natsbus.RelayConfig{BatchSize: 64})
	testkit.WaitFor(t, 10*time.Second, "all events marked", o.allMarked)
	checkExactlyOnce(t, b.js, o)

	// Subjects and payloads arrive as the outbox holds them.
	ctx := t.Context()
	m, err := b.stream.GetMsg(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if ev := o.events[4]; m.Subject != ev.Subject || string(m.Data) != string(ev.Payload) {
		t.Errorf("message 5 = %s %s, want %s %s", m.Subject, m.Data, ev.Subject, ev.Payload)
	}
	if s := r.Stats(); s != (natsbus.RelayStats{Published: 1000}) {
		t.Errorf("stats = %+v, want 1000 published", s)
	}
}

func TestRelayNotify(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := newMemOutbox()
	r := startRelay(t, b.js, o, natsbus.RelayConfig{PollInterval: time.Hour})
	for i := range 3 {
		o.add(10)
		r.Notify()
		testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("wave %d published without polling", i), o.allMarked)
	}
	checkExactlyOnce(t, b.js, o)
}

// A relay that dies between publishing a batch and marking it leaves the
// batch pending; the next relay publishes it again and the stream drops
// the copies.
func TestRelayCrashBeforeMark(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := newMemOutbox()
	o.add(200)
	o.crashAt = 1 // the first batch is published, its mark "crashes"

	first := startRelay(t, b.js, o, natsbus.RelayConfig{BatchSize: 100})
	<-o.crashed
	first.Stop()
	if s := first.Stats(); s.Published != 100 || s.Duplicates != 0 {
		t.Errorf("crashed relay stats = %+v, want 100 published", s)
	}
	if n := len(storedIDs(t, b.js)); n != 100 {
		t.Fatalf("after the crash the stream holds %d messages, want the first batch of 100", n)
	}

	o.revive()
	second := startRelay(t, b.js, o, natsbus.RelayConfig{BatchSize: 100})
	testkit.WaitFor(t, 10*time.Second, "all events marked", o.allMarked)
	checkExactlyOnce(t, b.js, o)
	if s := second.Stats(); s.Duplicates != 100 || s.Published != 100 {
		t.Errorf("restarted relay stats = %+v, want 100 duplicates and 100 published", s)
	}
}

// The server process dies mid-relay, taking the embedded NATS server with
// it; after a restart on the same data directory nothing is lost or doubled.
func TestServerRestartMidRelay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := newMemOutbox()
	o.add(300)
	o.crashAt = 2

	first := startRelay(t, b.js, o, natsbus.RelayConfig{BatchSize: 100})
	<-o.crashed
	first.Stop()
	b.stop()

	b.start(t, natsbus.EmbeddedConfig{})
	if n := len(storedIDs(t, b.js)); n != 200 {
		t.Fatalf("after the restart the stream holds %d messages, want 2 batches of 100", n)
	}
	o.revive()
	second := startRelay(t, b.js, o, natsbus.RelayConfig{BatchSize: 100})
	testkit.WaitFor(t, 10*time.Second, "all events marked", o.allMarked)
	checkExactlyOnce(t, b.js, o)
	if s := second.Stats(); s.Duplicates != 100 || s.Published != 100 {
		t.Errorf("relay stats after restart = %+v, want 100 duplicates and 100 published", s)
	}
}

// The relay keeps going through a restart of the NATS server it reaches over
// TCP, as with --nats-url, while events keep arriving: with the client's
// reconnect buffer (the default), which hides short outages, and without it,
// where every publish during the outage fails.
func TestRelayRidesOutNATSRestart(t *testing.T) {
	t.Parallel()
	t.Run("buffered", func(t *testing.T) { t.Parallel(); ridesOutNATSRestart(t, false) })
	t.Run("unbuffered", func(t *testing.T) { t.Parallel(); ridesOutNATSRestart(t, true) })
}

func ridesOutNATSRestart(t *testing.T, unbuffered bool) {
	ctx := t.Context()
	dir := t.TempDir()
	srv, err := natsbus.StartEmbedded(ctx, dir, natsbus.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	opts := []nats.Option{nats.ReconnectWait(20 * time.Millisecond)}
	if unbuffered {
		opts = append(opts, nats.ReconnectBufSize(-1))
	}
	nc, err := natsbus.Connect(srv.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsbus.EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}

	o := newMemOutbox()
	r := startRelay(t, js, o, natsbus.RelayConfig{BatchSize: 16, MaxBackoff: 50 * time.Millisecond, Timeout: time.Second})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for range 1000 {
			<-tick.C
			o.add(1)
			r.Notify()
		}
	}()
	testkit.WaitFor(t, 10*time.Second, "300 events produced", func() bool { ids, _ := o.ids(); return len(ids) >= 300 })
	srv.Shutdown()
	testkit.WaitFor(t, 10*time.Second, "more events produced", func() bool { ids, _ := o.ids(); return len(ids) >= 400 })
	srv, err = natsbus.StartEmbedded(ctx, dir, natsbus.EmbeddedConfig{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	<-produced
	testkit.WaitFor(t, 20*time.Second, "all events marked", o.allMarked)
	ids, _ := o.ids()
	got := storedIDs(t, js)
	if len(got) != len(ids) || !sameSet(got, ids) {
		t.Errorf("stream holds %d messages, want the %d events once each", len(got), len(ids))
	}
	s := r.Stats()
	if unbuffered && s.Failures == 0 {
		t.Errorf("stats = %+v, want failures while the server was down", s)
	}
	t.Logf("relay through a NATS restart: %+v", s)
}

func sameSet(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(slices.Compact(a), b)
}

// BenchmarkRelay measures events/s from the outbox to the stream against
// BatchSize 1, where every publish waits for its ack before the next.
func BenchmarkRelay(b *testing.B) {
	var base float64
	for _, batch := range []int{1, 16, 256, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			bb := setup(b)
			o := newMemOutbox()
			o.add(b.N)
			b.ResetTimer()
			start := time.Now()
			r := natsbus.NewRelay(bb.js, o, natsbus.RelayConfig{BatchSize: batch, Logger: quiet})
			if err := r.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			testkit.WaitFor(b, time.Minute, "all events marked", o.allMarked)
			rate := float64(b.N) / time.Since(start).Seconds()
			b.StopTimer()
			r.Stop()
			b.ReportMetric(rate, "events/s")
			if batch == 1 {
				base = rate
			} else if base > 0 {
				b.ReportMetric(rate/base, "x_batch1")
			}
		})
	}
}
