package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/oxide-ci/oxide/internal/agentrpc"
)

// outbox is the ordered queue of what the agent sends the server, and the
// buffer of what the server has not acknowledged yet.
//
// Reliable messages (step updates, log batches, job results) get an
// increasing batch_seq when they are queued and stay until the server's
// cumulative Ack covers them; after a reconnect the connection rewinds and
// sends them again, in the same order. Best-effort messages (job accepted,
// job rejected) have no batch_seq: they are sent once, in their place in
// the order, and then forgotten; what they say reaches a server that missed
// them through the next Hello (the leases the agent holds).
//
// Messages are kept encoded (what the connection sends as is, see codec),
// so that the bound is on the bytes they really take. Entries are kept in
// segments, oldest first. A segment lives in memory or
// in a file of the spool directory. Entries go to memory while the bytes
// held in memory stay within memMax; past that they spill to files of up to
// segMax bytes, and memory is used again once acknowledgements have brought
// it down to half of memMax. A segment is dropped, and its file removed, as
// soon as its last entry is acknowledged, so the spool holds no more than
// the backlog plus one segment. If the spool cannot be written, entries stay
// in memory past the bound rather than being lost.
//
// Methods are safe for concurrent use; one goroutine (the connection's
// writer) calls next and sent.
type outbox struct {
	dir    string
	memMax int64
	segMax int64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever entries are added or removed
	segs    []*segment    // oldest first
	head    uint64        // position of the oldest entry held
	tail    uint64        // position of the next entry
	cursor  uint64        // position of the next entry to send on the current connection
	mem     int64         // bytes held in memory
	spilled int64         // bytes held in spool files
	nextSeq uint64        // batch_seq of the next reliable message
	files   int           // spool files made, for their names
	warned  bool          // a spool error was logged
	onError func(error)
}

// segment is a run of consecutive entries, in memory (file nil) or in a
// spool file.
type segment struct {
	first   uint64 // position of entries[0]
	entries []entry
	file    *os.File
	size    int64 // bytes written to file
}

type entry struct {
	seq  uint64 // batch_seq; 0: best-effort
	data []byte // the encoded message, in a memory segment
	off  int64  // in a file segment: where the encoded message starts
	n    int    // its length
	sent bool   // a best-effort entry was sent
}

// newOutbox returns an empty outbox that spills to dir, which it makes and
// empties: what a previous process left unsent is of no use now. firstSeq
// is the batch_seq of the first reliable message.
func newOutbox(dir string, memMax, segMax int64, firstSeq uint64, onError func(error)) (*outbox, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if onError == nil {
		onError = func(error) {}
	}
	return &outbox{dir: dir, memMax: memMax, segMax: segMax, nextSeq: firstSeq, changed: make(chan struct{}), onError: onError}, nil
}

// push queues a message. A reliable one gets the next batch_seq, set in
// the message (which must be a log batch, step update or job result).
func (o *outbox) push(m *agentrpc.AgentMessage, reliable bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := entry{}
	if reliable {
		e.seq = o.nextSeq
		o.nextSeq++
		setBatchSeq(m, e.seq)
	}
	b, err := proto.Marshal(m)
	if err != nil { // only invalid UTF-8 in a string field
		o.onError(fmt.Errorf("encode %T: %w", m.Msg, err))
		if reliable {
			o.nextSeq--
		}
		return
	}
	e.n = len(b)
	if !o.toMemory(e.n) {
		if err := o.spill(&e, b); err == nil {
			o.appendEntry(e, true)
			return
		} else if !o.warned {
			o.warned = true
			o.onError(fmt.Errorf("spool: %w (keeping unacknowledged messages in memory)", err))
		}
	}
	e.data = b
	o.mem += int64(e.n)
	o.appendEntry(e, false)
}

// toMemory reports whether an entry of n bytes goes to memory.
func (o *outbox) toMemory(n int) bool {
	if o.mem+int64(n) > o.memMax {
		return false
	}
	if len(o.segs) > 0 && o.segs[len(o.segs)-1].file != nil {
		return o.mem <= o.memMax/2 // spilling: back to memory once it has room again
	}
	return true
}

// spill writes b to the last segment's file, or to a new one.
func (o *outbox) spill(e *entry, b []byte) error {
	var s *segment
	if n := len(o.segs); n > 0 && o.segs[n-1].file != nil && o.segs[n-1].size < o.segMax {
		s = o.segs[n-1]
	} else {
		o.files++
		f, err := os.OpenFile(filepath.Join(o.dir, fmt.Sprintf("spool-%06d", o.files)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		s = &segment{first: o.tail, file: f}
		o.segs = append(o.segs, s)
	}
	if _, err := s.file.WriteAt(b, s.size); err != nil {
		if len(s.entries) == 0 {
			o.dropLast()
		}
		return err
	}
	e.off = s.size
	s.size += int64(len(b))
	o.spilled += int64(len(b))
	return nil
}

// dropLast removes the last segment, empty and just made.
func (o *outbox) dropLast() {
	s := o.segs[len(o.segs)-1]
	o.segs = o.segs[:len(o.segs)-1]
	s.file.Close()
	os.Remove(s.file.Name())
}

func (o *outbox) appendEntry(e entry, inFile bool) {
	n := len(o.segs)
	if n == 0 || (o.segs[n-1].file != nil) != inFile {
		o.segs = append(o.segs, &segment{first: o.tail})
		n++
	}
	o.segs[n-1].entries = append(o.segs[n-1].entries, e)
	o.tail++
	o.signal()
}

func (o *outbox) signal() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// wait returns a channel closed at the next change.
func (o *outbox) wait() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

// rewind makes next start again from the oldest entry held: what the
// previous connection sent and the server did not acknowledge is sent
// again.
func (o *outbox) rewind() {
	o.mu.Lock()
	o.cursor = o.head
	o.mu.Unlock()
}

// next returns the next message to send on this connection, encoded, and
// its position, or false when everything was sent. The bytes must not be
// modified.
func (o *outbox) next() ([]byte, uint64, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cursor = max(o.cursor, o.head)
	for ; o.cursor < o.tail; o.cursor++ {
		s, e := o.find(o.cursor)
		if e.seq == 0 && e.sent {
			continue
		}
		if s.file == nil {
			return e.data, o.cursor, true, nil
		}
		b := make([]byte, e.n)
		if _, err := s.file.ReadAt(b, e.off); err != nil {
			return nil, 0, false, fmt.Errorf("spool: %w", err)
		}
		return b, o.cursor, true, nil
	}
	return nil, 0, false, nil
}

// sent records that the message at pos was written to the connection.
func (o *outbox) sent(pos uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cursor = max(o.cursor, pos+1)
	if pos < o.head {
		return
	}
	if _, e := o.find(pos); e.seq == 0 {
		e.sent = true
		o.trim(0)
	}
}

// ack forgets every reliable message with batch_seq <= upTo, and the
// best-effort ones among and before them that were sent.
func (o *outbox) ack(upTo uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.trim(upTo)
}

// trim drops entries from the front: reliable ones acknowledged by upTo,
// best-effort ones already sent.
func (o *outbox) trim(upTo uint64) {
	dropped := false
	for len(o.segs) > 0 {
		s := o.segs[0]
		for len(s.entries) > 0 {
			e := &s.entries[0]
			if e.seq == 0 && !e.sent || e.seq != 0 && e.seq > upTo {
				break
			}
			if s.file == nil {
				o.mem -= int64(e.n)
			} else {
				o.spilled -= int64(e.n)
			}
			*e = entry{}
			s.entries = s.entries[1:]
			s.first++
			o.head++
			dropped = true
		}
		if len(s.entries) > 0 {
			break
		}
		if s.file != nil {
			s.file.Close()
			os.Remove(s.file.Name())
		}
		o.segs[0] = nil
		o.segs = o.segs[1:]
	}
	if dropped {
		o.signal()
	}
}

// find returns the segment and entry at pos, which is held.
func (o *outbox) find(pos uint64) (*segment, *entry) {
	for _, s := range o.segs {
		if pos < s.first+uint64(len(s.entries)) {
			return s, &s.entries[pos-s.first]
		}
	}
	panic("outbox: position not held")
}

// len returns the number of entries held: unacknowledged or unsent.
func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int(o.tail - o.head)
}

// stats returns the bytes held in memory and in the spool.
func (o *outbox) stats() (mem, spilled int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mem, o.spilled
}

// close removes the spool.
func (o *outbox) close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var errs []error
	for _, s := range o.segs {
		if s.file != nil {
			errs = append(errs, s.file.Close())
		}
	}
	o.segs = nil
	o.head = o.tail
	errs = append(errs, os.RemoveAll(o.dir))
	return errors.Join(errs...)
}

func setBatchSeq(m *agentrpc.AgentMessage, seq uint64) {
	switch m := m.Msg.(type) {
	case *agentrpc.AgentMessage_Logs:
		m.Logs.BatchSeq = seq
	case *agentrpc.AgentMessage_Step:
		m.Step.BatchSeq = seq
	case *agentrpc.AgentMessage_Result:
		m.Result.BatchSeq = seq
	default:
		panic(fmt.Sprintf("outbox: %T has no batch_seq", m))
	}
}
