package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

// maxMessage bounds one WebSocket message from the server.
const maxMessage = 4 << 20

// wsMessage is any message the server sends on the WebSocket: a reply
// (Type set) or an event (Channel set).
type wsMessage struct {
	Type     string          `json:"type"` // subscribed or error
	Message  string          `json:"message"`
	Channels []string        `json:"channels"`
	Channel  string          `json:"channel"`
	Payload  json.RawMessage `json:"payload"`
}

// Subscribe opens the server's event stream and subscribes to channels:
// subjects of the AsyncAPI spec with NATS wildcards ("run.started.>",
// "run.<run_id>.>"; * is one token, > the rest). It returns once the server
// has confirmed the subscription; a refused one is an error. Events arrive on
// the channel until ctx is done or the connection ends, then it is closed.
//
// Read the channel promptly: the server closes a client that falls 256
// messages behind.
func (c *Client) Subscribe(ctx context.Context, channels []string) (<-chan Event, error) {
	u, ok := strings.CutPrefix(c.base, "http")
	if !ok {
		return nil, fmt.Errorf("oxide: subscribe: server URL %q is not http or https", c.base)
	}
	u = "ws" + u + "/ws"
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.hc, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			return nil, parseError(resp)
		}
		return nil, fmt.Errorf("oxide: subscribe: %w", err)
	}
	conn.SetReadLimit(maxMessage)

	fail := func(err error) (<-chan Event, error) {
		conn.CloseNow()
		return nil, fmt.Errorf("oxide: subscribe: %w", err)
	}
	req, _ := json.Marshal(struct {
		Action   string   `json:"action"`
		Channels []string `json:"channels"`
	}{"subscribe", channels})
	if err := conn.Write(ctx, websocket.MessageText, req); err != nil {
		return fail(err)
	}
	// Wait for the answer, keeping any event that comes first.
	var early []Event
	for {
		m, err := read(ctx, conn)
		if err != nil {
			return fail(err)
		}
		if m.Channel != "" {
			early = append(early, Event{Channel: m.Channel, Payload: m.Payload})
			continue
		}
		if m.Type == "error" {
			return fail(errors.New(m.Message))
		}
		if m.Type == "subscribed" {
			break
		}
	}

	events := make(chan Event)
	go func() {
		defer close(events)
		defer conn.CloseNow()
		send := func(e Event) bool {
			select {
			case events <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, e := range early {
			if !send(e) {
				return
			}
		}
		for {
			m, err := read(ctx, conn)
			if err != nil {
				return
			}
			if m.Channel != "" && !send(Event{Channel: m.Channel, Payload: m.Payload}) {
				return
			}
		}
	}()
	return events, nil
}

// read reads one JSON message.
func read(ctx context.Context, conn *websocket.Conn) (wsMessage, error) {
	var m wsMessage
	_, b, err := conn.Read(ctx)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("a message that is not JSON: %w", err)
	}
	return m, nil
}
