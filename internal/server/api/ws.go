package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
)

const wsPath = "/api/v1/ws"

// WebSocket limits.
const (
	// sendBuffer is how many messages a client may fall behind before it
	// is closed as a slow consumer.
	sendBuffer   = 256
	maxChannels  = 100
	readLimit    = 64 << 10
	pingInterval = 30 * time.Second
	pingTimeout  = 10 * time.Second
	// writeTimeout bounds the write of one message; a client that takes
	// longer is gone.
	writeTimeout = 20 * time.Second
	// subscribeTimeout bounds subscribing to the stream for the first
	// client.
	subscribeTimeout = 10 * time.Second
)

// hub fans the event stream out to WebSocket clients. One JetStream
// subscription (to every subject) serves all clients of this server; it
// exists while at least one client is connected. Its callback never
// blocks: it offers each message to every client whose patterns match, and
// a client whose send buffer is full is closed as a slow consumer.
type hub struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.Mutex
	clients map[*wsClient]struct{}
	sub     *natsbus.Subscription
	closed  bool
	running sync.WaitGroup // client handlers

	// snapshot is the clients as a slice, rebuilt on every join and leave,
	// read by deliver without locking.
	snapshot atomic.Pointer[[]*wsClient]
}

func newHub(js jetstream.JetStream, log *slog.Logger) *hub {
	return &hub{js: js, log: log, clients: map[*wsClient]struct{}{}}
}

// errShuttingDown refuses clients once Shutdown has begun.
var errShuttingDown = errors.New("the server is shutting down")

// join adds c, subscribing to the stream first if c is the only client;
// from its return on, c is offered every event the stream stores.
func (h *hub) join(ctx context.Context, c *wsClient) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errShuttingDown
	}
	if h.sub == nil {
		ctx, cancel := context.WithTimeout(ctx, subscribeTimeout)
		defer cancel()
		sub, err := natsbus.Subscribe(ctx, h.js, []string{">"}, h.deliver)
		if err != nil {
			return fmt.Errorf("subscribe to events: %w", err)
		}
		h.sub = sub
	}
	h.clients[c] = struct{}{}
	h.publish()
	h.running.Add(1)
	return nil
}

// leave removes c, and the subscription with the last client.
func (h *hub) leave(c *wsClient) {
	h.mu.Lock()
	delete(h.clients, c)
	h.publish()
	var stop *natsbus.Subscription
	if len(h.clients) == 0 {
		stop, h.sub = h.sub, nil
	}
	h.mu.Unlock()
	if stop != nil {
		stop.Stop()
	}
	h.running.Done()
}

// publish rebuilds the snapshot; h.mu is held.
func (h *hub) publish() {
	cs := make([]*wsClient, 0, len(h.clients))
	for c := range h.clients {
		cs = append(cs, c)
	}
	h.snapshot.Store(&cs)
}

// deliver is the subscription's callback.
func (h *hub) deliver(m natsbus.Msg) {
	cs := h.snapshot.Load()
	if cs == nil {
		return
	}
	var frame []byte
	for _, c := range *cs {
		if !c.matches(m.Subject) {
			continue
		}
		if frame == nil {
			frame = eventFrame(m)
		}
		c.enqueue(frame)
	}
}

// eventFrame is the message of an event: {"channel", "payload"}. A payload
// that is not JSON is sent as a JSON string.
func eventFrame(m natsbus.Msg) []byte {
	payload := json.RawMessage(m.Payload)
	if !json.Valid(payload) {
		payload, _ = json.Marshal(string(m.Payload))
	}
	b, _ := json.Marshal(struct {
		Channel string          `json:"channel"`
		Payload json.RawMessage `json:"payload"`
	}{m.Subject, payload})
	return b
}

// shutdown closes every client with 1001 and waits for their handlers;
// when ctx ends first, it drops the connections without a close handshake.
func (h *hub) shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	cs := make([]*wsClient, 0, len(h.clients))
	for c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.close(websocket.StatusGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		h.running.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range cs {
			c.abort()
		}
		<-done
		return ctx.Err()
	}
}

// wsClient is one WebSocket connection.
type wsClient struct {
	actor    string
	send     chan []byte
	patterns atomic.Pointer[[]string]

	closeOnce sync.Once
	closing   chan struct{} // closed by close: the writer closes the connection
	code      websocket.StatusCode
	reason    string

	abort context.CancelFunc // drops the connection at once
}

func (c *wsClient) matches(subject string) bool {
	ps := c.patterns.Load()
	if ps == nil {
		return false
	}
	for _, p := range *ps {
		if events.MatchSubject(p, subject) {
			return true
		}
	}
	return false
}

// enqueue offers a message without blocking; a full buffer closes the
// client as a slow consumer.
func (c *wsClient) enqueue(frame []byte) {
	select {
	case <-c.closing:
		return
	default:
	}
	select {
	case c.send <- frame:
	default:
		c.close(websocket.StatusPolicyViolation, "slow consumer")
	}
}

// close asks the writer to close the connection with code and reason; the
// first call wins.
func (c *wsClient) close(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		c.code, c.reason = code, reason
		close(c.closing)
	})
}

// reply queues a JSON answer to the client.
func (c *wsClient) reply(v any) {
	b, _ := json.Marshal(v)
	c.enqueue(b)
}

type wsReply struct {
	Type     string   `json:"type"` // subscribed, unsubscribed or error
	Channels []string `json:"channels,omitempty"`
	Message  string   `json:"message,omitempty"`
}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request, p *principal) error {
	if s.hub == nil {
		return errorf(http.StatusNotFound, codeNotFound, "the event stream is not enabled on this server")
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return invalidf("%s needs a WebSocket handshake (Upgrade: websocket)", wsPath)
	}
	ctx, abort := context.WithCancel(r.Context())
	defer abort()
	c := &wsClient{actor: p.Name, send: make(chan []byte, sendBuffer), closing: make(chan struct{}), abort: abort}
	c.patterns.Store(&[]string{})
	if err := s.hub.join(ctx, c); err != nil {
		if errors.Is(err, errShuttingDown) {
			return errorf(http.StatusServiceUnavailable, codeUnavailable, "%v", err)
		}
		return err
	}
	defer s.hub.leave(c)
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// Clients authenticate with a token they present, never with
		// cookies, so a cross-origin page has no ambient authority to
		// abuse: any origin may connect.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return nil // Accept has answered
	}
	defer conn.CloseNow()
	conn.SetReadLimit(readLimit)
	log := s.log.With("actor", p.Name, "request_id", requestIDFrom(r.Context()))

	var wg sync.WaitGroup
	wg.Go(func() { c.write(ctx, conn, log) })
	wg.Go(func() { c.keepAlive(ctx, conn) })
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			break
		}
		if typ != websocket.MessageText {
			c.reply(wsReply{Type: "error", Message: "send JSON text messages"})
			continue
		}
		c.handle(data)
	}
	c.close(websocket.StatusNormalClosure, "")
	abort()
	wg.Wait()
	if c.code == websocket.StatusPolicyViolation {
		log.Warn("websocket client dropped", "reason", c.reason)
	}
	return nil
}

// handle answers one message of the client.
func (c *wsClient) handle(data []byte) {
	var req struct {
		Action   string   `json:"action"`
		Channels []string `json:"channels"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		c.reply(wsReply{Type: "error", Message: "malformed message: " + strings.TrimPrefix(err.Error(), "json: ")})
		return
	}
	if len(req.Channels) == 0 {
		c.reply(wsReply{Type: "error", Message: "channels: at least one is required"})
		return
	}
	cur := *c.patterns.Load()
	switch req.Action {
	case "subscribe":
		var bad []string
		for _, p := range req.Channels {
			if err := events.ValidatePattern(p); err != nil {
				bad = append(bad, err.Error())
			} else if !matchesStream(p) {
				bad = append(bad, fmt.Sprintf("%q matches no event subject", p))
			}
		}
		if len(bad) > 0 {
			c.reply(wsReply{Type: "error", Message: strings.Join(bad, "; ")})
			return
		}
		next := slices.Clone(cur)
		for _, p := range req.Channels {
			if !slices.Contains(next, p) {
				next = append(next, p)
			}
		}
		if len(next) > maxChannels {
			c.reply(wsReply{Type: "error", Message: fmt.Sprintf("more than %d channels", maxChannels)})
			return
		}
		c.patterns.Store(&next)
		c.reply(wsReply{Type: "subscribed", Channels: req.Channels})
	case "unsubscribe":
		next := slices.DeleteFunc(slices.Clone(cur), func(p string) bool { return slices.Contains(req.Channels, p) })
		c.patterns.Store(&next)
		c.reply(wsReply{Type: "unsubscribed", Channels: req.Channels})
	default:
		c.reply(wsReply{Type: "error", Message: fmt.Sprintf("action %q is not subscribe or unsubscribe", req.Action)})
	}
}

// write sends the client's messages until it is closed, then closes the
// connection with the close's code and reason (after the message being
// written, if any).
func (c *wsClient) write(ctx context.Context, conn *websocket.Conn, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.closing:
			_ = conn.Close(c.code, c.reason)
			return
		case frame := <-c.send:
			select {
			case <-c.closing: // closing wins over what is queued
				_ = conn.Close(c.code, c.reason)
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, writeTimeout)
			err := conn.Write(wctx, websocket.MessageText, frame)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					log.Debug("websocket write failed", "err", err)
				}
				c.abort()
				return
			}
		}
	}
}

// keepAlive pings the client; one that does not answer in time is
// dropped.
func (c *wsClient) keepAlive(ctx context.Context, conn *websocket.Conn) {
	t := time.NewTicker(pingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.closing:
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, pingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				c.abort()
				return
			}
		}
	}
}

// matchesStream reports whether some subject of the event stream matches
// the valid pattern p.
func matchesStream(p string) bool {
	for _, s := range events.StreamSubjects() {
		if overlap(p, s) {
			return true
		}
	}
	return false
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
