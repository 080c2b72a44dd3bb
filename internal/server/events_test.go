package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/testkit"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
)

// TestEventsReachJetStream runs a pipeline on a server pointed at an
// external NATS (--nats-url: here an embedded server that the test starts)
// and reads the run's lifecycle events from the OXIDE stream, with the
// fields that the AsyncAPI payloads require.
func TestEventsReachJetStream(t *testing.T) {
	ctx := t.Context()
	emb, err := natsbus.StartEmbedded(ctx, t.TempDir(), natsbus.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown) // after the server's cleanup, which is registered later
	cfg := testConfig(t)
	cfg.NATSURL = emb.ClientURL()
	s := startServer(t, cfg)

	var p struct{ ID string }
	s.call(t, "POST", "/api/v1/pipelines", s.Token, map[string]string{"name": "evented", "definition": contractPipeline}).want(t, 201, &p)
	var run runJSON
	s.call(t, "POST", "/api/v1/pipelines/"+p.ID+"/runs", s.Token, map[string]any{"branch": "main"}).want(t, 201, &run)
	testkit.Until(t, 60*time.Second, func() (bool, string) {
		s.call(t, "GET", "/api/v1/runs/"+run.ID, s.Token, nil).want(t, 200, &run)
		return run.Status == "success", "run status " + run.Status
	})

	// A client of its own, over TCP, as any other consumer of the stream.
	nc, err := nats.Connect(emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, natsbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	// The relay publishes after the commit, so the last event may lag.
	last := func(subject string) (*jetstream.RawStreamMsg, error) {
		return stream.GetLastMsgForSubject(ctx, subject)
	}
	testkit.Until(t, 10*time.Second, func() (bool, string) {
		for _, subj := range []string{
			events.RunQueuedSubject(p.ID),
			events.RunStartedSubject(p.ID, run.ID),
			events.RunCompletedSubject(p.ID, run.ID),
		} {
			if _, err := last(subj); err != nil {
				return false, fmt.Sprintf("%s: %v", subj, err)
			}
		}
		return true, ""
	})

	// Each payload has its spec's required fields (schemas/run.yaml), with
	// this run's values; each message its outbox event's id as Nats-Msg-Id.
	payload := func(subject string) map[string]any {
		t.Helper()
		m, err := last(subject)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		if m.Header.Get(nats.MsgIdHdr) == "" {
			t.Errorf("%s: no %s header", subject, nats.MsgIdHdr)
		}
		var v map[string]any
		if err := json.Unmarshal(m.Data, &v); err != nil {
			t.Fatalf("%s: %v\n%s", subject, err, m.Data)
		}
		return v
	}
	check := func(subject string, v map[string]any, want map[string]any, required ...string) {
		t.Helper()
		for _, k := range required {
			if _, ok := v[k]; !ok {
				t.Errorf("%s: required field %q missing: %v", subject, k, v)
			}
		}
		for k, w := range want {
			if v[k] != w {
				t.Errorf("%s: %s = %#v, want %#v", subject, k, v[k], w)
			}
		}
		for _, k := range []string{"queued_at", "started_at", "completed_at"} {
			if x, ok := v[k]; ok {
				if ts, _ := x.(string); ts == "" || !validTime(ts) {
					t.Errorf("%s: %s = %#v, want an RFC 3339 time", subject, k, x)
				}
			}
		}
	}
	ids := map[string]any{"run_id": run.ID, "pipeline_id": p.ID, "run_number": 1.0}

	subj := events.RunQueuedSubject(p.ID)
	check(subj, payload(subj), merge(ids, map[string]any{"trigger": "manual", "pipeline_name": "evented"}),
		"run_id", "pipeline_id", "pipeline_name", "run_number", "trigger", "queued_at")

	subj = events.RunStartedSubject(p.ID, run.ID)
	v := payload(subj)
	check(subj, v, ids, "run_id", "pipeline_id", "agent_id", "started_at")
	if id, _ := v["agent_id"].(string); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(id) {
		t.Errorf("%s: agent_id = %q, want the UUID of the agent that ran it", subj, id)
	}

	subj = events.RunCompletedSubject(p.ID, run.ID)
	v = payload(subj)
	check(subj, v, merge(ids, map[string]any{"status": "success", "pipeline_name": "evented", "stages_passed": 2.0, "stages_failed": 0.0}),
		"run_id", "pipeline_id", "status", "duration_ms", "completed_at")
	if d, ok := v["duration_ms"].(float64); !ok || d < 0 {
		t.Errorf("%s: duration_ms = %#v, want a number ≥ 0", subj, v["duration_ms"])
	}

	// The stages' events are there too.
	for _, stage := range []string{"build", "test"} {
		for _, subj := range []string{events.StageStartedSubject(run.ID, stage), events.StageCompletedSubject(run.ID, stage)} {
			if _, err := last(subj); err != nil {
				t.Errorf("%s: %v", subj, err)
			}
		}
	}
	if _, err := last("run.cancelled.>"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("run.cancelled.>: %v, want none", err)
	}
}

func merge(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

func validTime(s string) bool {
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}
