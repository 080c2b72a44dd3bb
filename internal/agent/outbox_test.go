package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/oxide-ci/oxide/internal/agentrpc"
)

func logMsg(text string) *agentrpc.AgentMessage {
	return &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Logs{Logs: &agentrpc.LogBatch{
		Lease: &agentrpc.Lease{JobId: "j1"}, Lines: []*agentrpc.LogLine{{Text: text}},
	}}}
}

func acceptedMsg(job string) *agentrpc.AgentMessage {
	return &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Accepted{Accepted: &agentrpc.JobAccepted{Lease: &agentrpc.Lease{JobId: job}}}}
}

// drainOutbox sends everything the outbox has for this connection and
// returns it as text: log lines by their text, accepted jobs as +ID.
func drainOutbox(t *testing.T, o *outbox) []string {
	t.Helper()
	var got []string
	for {
		b, pos, ok, err := o.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return got
		}
		m := &agentrpc.AgentMessage{}
		if err := proto.Unmarshal(b, m); err != nil {
			t.Fatal(err)
		}
		switch {
		case m.GetLogs() != nil:
			got = append(got, m.GetLogs().Lines[0].Text)
		case m.GetAccepted() != nil:
			got = append(got, "+"+m.GetAccepted().Lease.JobId)
		}
		o.sent(pos)
	}
}

func spoolFiles(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func TestOutboxAckRewind(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "spool")
	o, err := newOutbox(dir, 1<<20, 1<<20, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	o.push(logMsg("a"), true) // seq 10
	o.push(acceptedMsg("j2"), false)
	o.push(logMsg("b"), true) // seq 11
	o.push(logMsg("c"), true) // seq 12
	if got := strings.Join(drainOutbox(t, o), " "); got != "a +j2 b c" {
		t.Fatalf("first connection sent %q", got)
	}
	o.ack(10)
	if o.len() != 2 { // a, and the best-effort entry after it that was sent
		t.Fatalf("len after ack(10) = %d, want 2", o.len())
	}
	// Reconnect: what is unacknowledged goes again, the best-effort
	// message does not.
	o.rewind()
	if got := strings.Join(drainOutbox(t, o), " "); got != "b c" {
		t.Fatalf("after rewind sent %q, want \"b c\"", got)
	}
	o.ack(12)
	if o.len() != 0 {
		t.Fatalf("len after ack(12) = %d", o.len())
	}
	o.push(logMsg("d"), true)
	b, _, _, _ := o.next()
	m := &agentrpc.AgentMessage{}
	if err := proto.Unmarshal(b, m); err != nil || m.GetLogs().BatchSeq != 13 {
		t.Fatalf("next batch_seq = %d, want 13", m.GetLogs().BatchSeq)
	}
}

// TestOutboxSpill: past the memory bound, entries go to spool files, are
// sent and resent from there in order, and the files go once acknowledged.
func TestOutboxSpill(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "spool")
	o, err := newOutbox(dir, 1000, 2000, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	var want []string
	for i := range 200 {
		text := strings.Repeat("x", 40) + string(rune('A'+i%26))
		want = append(want, text)
		o.push(logMsg(text), true)
	}
	mem, spilled := o.stats()
	if mem > 1000 || spilled == 0 {
		t.Fatalf("memory %d bytes (bound 1000), spilled %d", mem, spilled)
	}
	if n := spoolFiles(t, dir); n < 2 {
		t.Fatalf("%d spool files, want several", n)
	}
	for range 2 { // the first connection, then a reconnect
		o.rewind()
		if got := drainOutbox(t, o); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("sent %d entries, want %d in order", len(got), len(want))
		}
	}
	// Acknowledging half frees memory: new entries go there again only once
	// it is half empty.
	o.ack(100)
	o.push(logMsg("late"), true)
	want = append(want[100:], "late")
	o.rewind()
	if got := drainOutbox(t, o); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after ack(100) sent %v", got)
	}
	o.ack(201)
	if o.len() != 0 || spoolFiles(t, dir) != 0 {
		t.Fatalf("after the last ack: %d entries, %d spool files", o.len(), spoolFiles(t, dir))
	}
	if mem, spilled := o.stats(); mem != 0 || spilled != 0 {
		t.Fatalf("after the last ack: %d bytes in memory, %d spilled", mem, spilled)
	}
}

// TestOutboxSpoolFailure: when the spool cannot be written, entries stay in
// memory rather than being lost.
func TestOutboxSpoolFailure(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "spool")
	var reported error
	o, err := newOutbox(dir, 100, 1000, 1, func(err error) { reported = err })
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		o.push(logMsg(strings.Repeat("y", 50)), true)
	}
	if got := drainOutbox(t, o); len(got) != 10 {
		t.Fatalf("sent %d of 10", len(got))
	}
	if reported == nil || !errors.Is(reported, os.ErrNotExist) {
		t.Fatalf("reported %v", reported)
	}
}
