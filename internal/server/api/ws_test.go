package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// startNATS starts an embedded NATS server with the event stream.
func startNATS(t *testing.T) jetstream.JetStream {
	t.Helper()
	ctx := context.Background()
	srv, err := natsbus.StartEmbedded(ctx, t.TempDir(), natsbus.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect()
	if err != nil {
		srv.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		srv.Shutdown()
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsbus.EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	return js
}

type wsMsg struct {
	Type     string          `json:"type"`
	Message  string          `json:"message"`
	Channels []string        `json:"channels"`
	Channel  string          `json:"channel"`
	Payload  json.RawMessage `json:"payload"`
}

// dialWS connects to the event stream with a token in the header, or in
// the query when query is set.
func (b *bundle) dialWS(t *testing.T, token string, query bool, hc *http.Client) (*websocket.Conn, error) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(b.srv.URL, "http") + "/api/v1/ws"
	opts := &websocket.DialOptions{HTTPClient: hc, HTTPHeader: http.Header{}}
	if query {
		u += "?token=" + token
	} else if token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("status %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c, nil
}

func send(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, c *websocket.Conn) wsMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m wsMsg
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("message %s: %v", data, err)
	}
	return m
}

func subscribe(t *testing.T, c *websocket.Conn, channels ...string) {
	t.Helper()
	send(t, c, map[string]any{"action": "subscribe", "channels": channels})
	if m := recv(t, c); m.Type != "subscribed" || strings.Join(m.Channels, " ") != strings.Join(channels, " ") {
		t.Fatalf("subscribe answer = %+v", m)
	}
}

func publish(t *testing.T, js jetstream.JetStream, subject, payload string) {
	t.Helper()
	if _, err := js.Publish(context.Background(), subject, []byte(payload)); err != nil {
		t.Fatal(err)
	}
}

func TestWebSocketSubscribe(t *testing.T) {
	t.Parallel()
	js := startNATS(t)
	b := setupWith(t, options{js: js})

	c, err := b.dialWS(t, b.viewer, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, c, "run.started.>", "run.r1.>")

	publish(t, js, events.RunStartedSubject("p1", "r1"), `{"run_id":"r1"}`)
	publish(t, js, events.AgentHeartbeatSubject("a1"), `{"agent_id":"a1"}`) // not subscribed
	publish(t, js, events.StepOutputSubject("r1", "s1"), `{"line":"hello"}`)
	publish(t, js, events.StepOutputSubject("r2", "s1"), `{"line":"other run"}`) // not subscribed
	publish(t, js, events.RunStartedSubject("p2", "r2"), `{"run_id":"r2"}`)

	want := []struct{ channel, payload string }{
		{"run.started.p1.r1", `{"run_id":"r1"}`},
		{"run.r1.step.s1.output", `{"line":"hello"}`},
		{"run.started.p2.r2", `{"run_id":"r2"}`},
	}
	for _, w := range want {
		m := recv(t, c)
		if m.Channel != w.channel || string(m.Payload) != w.payload {
			t.Fatalf("event = %s %s, want %s %s", m.Channel, m.Payload, w.channel, w.payload)
		}
	}

	// Bad requests are answered with errors and change nothing.
	for _, req := range []any{
		map[string]any{"action": "subscribe", "channels": []string{"run..x"}},
		map[string]any{"action": "subscribe", "channels": []string{"nothing.>"}},
		map[string]any{"action": "subscribe", "channels": []string{}},
		map[string]any{"action": "listen", "channels": []string{"run.>"}},
		map[string]any{"action": "subscribe", "channels": []string{"run.>"}, "extra": 1},
		"not json",
	} {
		send(t, c, req)
		if m := recv(t, c); m.Type != "error" || m.Message == "" {
			t.Errorf("%v: answer %+v, want an error", req, m)
		}
	}

	send(t, c, map[string]any{"action": "unsubscribe", "channels": []string{"run.started.>"}})
	if m := recv(t, c); m.Type != "unsubscribed" {
		t.Fatalf("unsubscribe answer = %+v", m)
	}
	publish(t, js, events.RunStartedSubject("p3", "r3"), `{"run_id":"r3"}`)
	publish(t, js, events.StepOutputSubject("r1", "s2"), `{"fence":true}`)
	if m := recv(t, c); m.Channel != "run.r1.step.s2.output" {
		t.Errorf("after unsubscribe got %s %s, want only the fence", m.Channel, m.Payload)
	}

	// Not a handshake.
	b.do(t, "GET", "/api/v1/ws", b.viewer, nil).wantError(t, 400, "invalid_request")

	// A token in the query; none at all.
	q, err := b.dialWS(t, b.viewer, true, nil)
	if err != nil {
		t.Fatalf("token in query: %v", err)
	}
	subscribe(t, q, "agent.>")
	if _, err := b.dialWS(t, "", false, nil); err == nil || !strings.Contains(err.Error(), "status 401") {
		t.Errorf("no token: err = %v, want 401", err)
	}
	if _, err := b.dialWS(t, "oxt_wrong", true, nil); err == nil || !strings.Contains(err.Error(), "status 401") {
		t.Errorf("wrong token: err = %v, want 401", err)
	}
}

// A client that does not read is closed as a slow consumer once 256
// messages wait for it, while another client receives every message.
func TestWebSocketSlowConsumer(t *testing.T) {
	t.Parallel()
	js := startNATS(t)
	b := setupWith(t, options{js: js})

	// The slow client reads its answer, then nothing: its socket buffers
	// fill (they grow only as an application reads), then its 256 slots.
	slow, err := b.dialWS(t, b.viewer, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, slow, "run.>")
	fast, err := b.dialWS(t, b.developer, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, fast, "run.>")

	const total, batch = 800, 50
	var fastGot atomic.Int64
	fastErr := make(chan error, 1)
	go func() {
		for {
			_, data, err := fast.Read(context.Background())
			if err != nil {
				fastErr <- err
				return
			}
			var m wsMsg
			if json.Unmarshal(data, &m) != nil || m.Channel == "" {
				fastErr <- fmt.Errorf("unexpected message %.100s", data)
				return
			}
			fastGot.Add(1)
		}
	}()

	payload := `{"line":"` + strings.Repeat("x", 16<<10) + `"}`
	subject := events.StepOutputSubject("r1", "s1")
	for sent := 0; sent < total; {
		for range batch {
			publish(t, js, subject, payload)
			sent++
		}
		// The fast client keeps up: never more than a batch behind.
		deadline := time.Now().Add(20 * time.Second)
		for fastGot.Load() < int64(sent) {
			select {
			case err := <-fastErr:
				t.Fatalf("fast client after %d messages: %v", fastGot.Load(), err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("fast client got %d of %d", fastGot.Load(), sent)
			}
			time.Sleep(time.Millisecond)
		}
	}

	// The slow client gets what was in flight, then the close.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n := 0
	for {
		_, _, err = slow.Read(ctx)
		if err != nil {
			break
		}
		n++
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "slow consumer" {
		t.Fatalf("slow client ended with %v after %d messages, want close 1008 \"slow consumer\"", err, n)
	}
	if n >= total {
		t.Errorf("slow client got all %d messages", n)
	}
	t.Logf("the slow client got %d of %d messages", n, total)

	// The fast client is still served.
	publish(t, js, subject, `{"after":true}`)
	deadline := time.Now().Add(10 * time.Second)
	for fastGot.Load() < total+1 {
		if time.Now().After(deadline) {
			t.Fatal("fast client stopped receiving")
		}
		time.Sleep(time.Millisecond)
	}
	// The close reaches the client before the server logs it.
	testkit.WaitFor(t, 10*time.Second, "the drop to be logged", func() bool { return strings.Contains(b.logs.String(), "slow consumer") })
}

func TestWebSocketShutdown(t *testing.T) {
	t.Parallel()
	js := startNATS(t)
	b := setupWith(t, options{js: js})
	c, err := b.dialWS(t, b.viewer, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, c, "run.>")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The client reads while the server shuts down, to answer the close.
	readErr := make(chan error, 1)
	go func() {
		_, _, err := c.Read(ctx)
		readErr <- err
	}()
	start := time.Now()
	if err := b.api.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %s", d)
	}
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("read after shutdown: %v, want 1001", err)
	}
	if _, err := b.dialWS(t, b.viewer, false, nil); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Errorf("dial after shutdown: %v, want 503", err)
	}
}

func TestWebSocketDisabled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.dialWS(t, b.viewer, false, nil); err == nil || !strings.Contains(err.Error(), "status 404") {
		t.Errorf("dial without JetStream: %v, want 404", err)
	}
}
