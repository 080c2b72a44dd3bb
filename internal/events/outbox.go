package events

import "time"

// OutboxEvent is an event as the transactional outbox holds it: written in
// the same transaction as the state change it reports, published afterwards
// by the relay (natsbus.Relay).
type OutboxEvent struct {
	ID        string // unique; published as Nats-Msg-Id, so the stream stores it once
	Subject   string // one of the *Subject builders' results
	Payload   []byte // the event's JSON
	CreatedAt time.Time
}
