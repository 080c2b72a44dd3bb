package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

func testAgents(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	as := st.Agents()

	a, err := as.Register(ctx, store.Agent{Name: "runner-1", Labels: []string{"linux", "docker"}, Version: "0.1.0", OS: "linux", Arch: "amd64"})
	noErr(t, err)
	if a.ID == "" || a.Status != store.AgentOnline || a.Capacity != 1 || a.LastHeartbeatAt == nil {
		t.Fatalf("registered %+v", a)
	}
	fresh(t, "RegisteredAt", a.RegisteredAt)
	// Registering again, after a restart, keeps the identity.
	_, err = as.SetStatus(ctx, a.ID, store.AgentOffline)
	noErr(t, err)
	again, err := as.Register(ctx, store.Agent{ID: a.ID, Name: "runner-1", Labels: []string{"linux"}, Capacity: 4})
	noErr(t, err)
	if again.Status != store.AgentOnline || !again.RegisteredAt.Equal(a.RegisteredAt) || again.Capacity != 4 || len(again.Labels) != 1 {
		t.Fatalf("registered again %+v", again)
	}
	got, err := as.Get(ctx, a.ID)
	noErr(t, err)
	equal(t, got, again)
	// The machine it reports is stored, and replaced on registering again.
	sized, err := as.Register(ctx, store.Agent{ID: a.ID, Name: "runner-1", Labels: []string{"linux"}, Capacity: 4,
		OS: "linux", Arch: "arm64", CPUMillis: 8000, MemoryBytes: 16 << 30, GPUs: 2})
	noErr(t, err)
	if sized.CPUMillis != 8000 || sized.MemoryBytes != 16<<30 || sized.GPUs != 2 || sized.Arch != "arm64" {
		t.Fatalf("registered with resources %+v", sized)
	}
	got, err = as.Get(ctx, a.ID)
	noErr(t, err)
	equal(t, got, sized)
	_, err = as.Register(ctx, store.Agent{ID: a.ID, Name: "runner-1", GPUs: -1})
	wantErr(t, err, store.ErrInvalid)

	noErr(t, as.Heartbeat(ctx, a.ID))
	wantErr(t, as.Heartbeat(ctx, "no-such-agent"), store.ErrNotFound)
	busy, err := as.SetStatus(ctx, a.ID, store.AgentBusy)
	noErr(t, err)
	equal(t, busy.Status, store.AgentBusy)
	_, err = as.SetStatus(ctx, a.ID, "bogus")
	wantErr(t, err, store.ErrInvalid)
	_, err = as.SetStatus(ctx, "no-such-agent", store.AgentBusy)
	wantErr(t, err, store.ErrNotFound)

	// Silent: connected agents, and offline ones holding a job; not b,
	// offline holding nothing.
	b, err := as.Register(ctx, store.Agent{Name: "runner-0"})
	noErr(t, err)
	_, err = as.SetStatus(ctx, b.ID, store.AgentOffline)
	noErr(t, err)
	c, err := as.Register(ctx, store.Agent{Name: "runner-2"})
	noErr(t, err)
	enqueue(t, st, store.Job{Name: "held"})
	held, err := st.Jobs().Claim(ctx, c.ID, nil, 1, time.Hour)
	noErr(t, err)
	equal(t, len(held), 1)
	_, err = as.SetStatus(ctx, c.ID, store.AgentOffline)
	noErr(t, err)
	silent, err := as.Silent(ctx, time.Hour)
	noErr(t, err)
	equal(t, len(silent), 0)
	_, err = as.MarkLost(ctx, a.ID, time.Hour)
	wantErr(t, err, store.ErrConflict)
	eventually(t, "the agents to be silent", func() bool {
		silent, err = as.Silent(ctx, time.Millisecond)
		noErr(t, err)
		return len(silent) == 2
	})
	if silent[0].ID != a.ID || silent[1].ID != c.ID {
		t.Fatalf("silent %+v, want runner-1 and runner-2", silent)
	}
	_, err = as.MarkLost(ctx, b.ID, time.Millisecond)
	wantErr(t, err, store.ErrConflict)
	_, err = as.MarkLost(ctx, "no-such-agent", time.Millisecond)
	wantErr(t, err, store.ErrNotFound)
	for _, s := range silent {
		lost, err := as.MarkLost(ctx, s.ID, time.Millisecond)
		noErr(t, err)
		equal(t, lost.Status, store.AgentLost)
		_, err = as.MarkLost(ctx, s.ID, time.Millisecond)
		wantErr(t, err, store.ErrConflict) // lost already
	}
	list, err := as.List(ctx)
	noErr(t, err)
	if len(list) != 3 || list[0].Status != store.AgentOffline || list[1].Status != store.AgentLost || list[2].Status != store.AgentLost {
		t.Fatalf("list %+v", list)
	}
	// Heard from again, an agent is not silent.
	noErr(t, as.Heartbeat(ctx, c.ID))
	_, err = as.SetStatus(ctx, c.ID, store.AgentOnline)
	noErr(t, err)
	_, err = as.MarkLost(ctx, c.ID, time.Hour)
	wantErr(t, err, store.ErrConflict)

	noErr(t, as.Delete(ctx, a.ID))
	_, err = as.Get(ctx, a.ID)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, as.Delete(ctx, a.ID), store.ErrNotFound)
	equal(t, eventTypes(t, st, a.ID), []string{"agent.registered", "agent.offline", "agent.registered", "agent.registered", "agent.busy", "agent.lost", "agent.deleted"})
}

func testSecrets(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	ss := st.Secrets()
	org := store.SecretKey{Scope: store.ScopeOrganization, Name: "TOKEN"}
	proj := store.SecretKey{Scope: store.ScopeProject, ScopeID: "p1", Name: "TOKEN"}

	s1, err := ss.Put(ctx, store.Secret{SecretKey: org, Ciphertext: []byte("sealed-1")})
	noErr(t, err)
	_, err = ss.Put(ctx, store.Secret{SecretKey: proj, Ciphertext: []byte("sealed-2")})
	noErr(t, err)
	got, err := ss.Get(ctx, org)
	noErr(t, err)
	equal(t, got, s1)
	got, err = ss.Get(ctx, proj)
	noErr(t, err)
	equal(t, string(got.Ciphertext), "sealed-2")

	s1b, err := ss.Put(ctx, store.Secret{SecretKey: org, Ciphertext: []byte("sealed-3")})
	noErr(t, err)
	if string(s1b.Ciphertext) != "sealed-3" || !s1b.CreatedAt.Equal(s1.CreatedAt) || s1b.UpdatedAt.Before(s1.UpdatedAt) {
		t.Fatalf("replaced %+v", s1b)
	}
	_, err = ss.Put(ctx, store.Secret{SecretKey: store.SecretKey{Scope: "world", Name: "X"}, Ciphertext: []byte("x")})
	wantErr(t, err, store.ErrInvalid)
	_, err = ss.Put(ctx, store.Secret{SecretKey: org})
	wantErr(t, err, store.ErrInvalid)

	_, err = ss.Put(ctx, store.Secret{SecretKey: store.SecretKey{Scope: store.ScopeOrganization, Name: "API_KEY"}, Ciphertext: []byte("k")})
	noErr(t, err)
	list, err := ss.List(ctx, store.ScopeOrganization, "")
	noErr(t, err)
	if len(list) != 2 || list[0].Name != "API_KEY" || list[1].Name != "TOKEN" || list[0].Ciphertext != nil || list[1].Ciphertext != nil {
		t.Fatalf("list %+v", list)
	}

	noErr(t, ss.Delete(ctx, org))
	_, err = ss.Get(ctx, org)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, ss.Delete(ctx, org), store.ErrNotFound)
	_, err = ss.Get(ctx, proj)
	noErr(t, err)

	for _, e := range pending(t, st) {
		if bytes.Contains(e.Payload, []byte("sealed")) || bytes.Contains(e.Payload, []byte("ciphertext")) {
			t.Fatalf("event %s carries the ciphertext: %s", e.Type, e.Payload)
		}
	}
	equal(t, eventTypes(t, st, "organization//TOKEN"), []string{"secret.saved", "secret.saved", "secret.deleted"})
}

func testTokens(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	ts := st.Tokens()
	const hash1 = "1f0c9b8e5d4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e"
	const hash2 = "2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d"

	tok, err := ts.Create(ctx, store.APIToken{Name: "deploy-bot", Role: "developer", Hash: hash1})
	noErr(t, err)
	if tok.ID == "" || tok.Name != "deploy-bot" || tok.Role != "developer" || tok.Hash != hash1 || tok.LastUsedAt != nil {
		t.Fatalf("created %+v", tok)
	}
	fresh(t, "CreatedAt", tok.CreatedAt)
	_, err = ts.Create(ctx, store.APIToken{Name: "deploy-bot", Role: "viewer", Hash: hash2})
	wantErr(t, err, store.ErrConflict)
	_, err = ts.Create(ctx, store.APIToken{Name: "other", Role: "viewer", Hash: hash1})
	wantErr(t, err, store.ErrConflict)
	_, err = ts.Create(ctx, store.APIToken{Name: "root", Role: "owner", Hash: hash2})
	wantErr(t, err, store.ErrInvalid)
	_, err = ts.Create(ctx, store.APIToken{Name: "root", Role: "admin"})
	wantErr(t, err, store.ErrInvalid)

	got, err := ts.GetByHash(ctx, hash1)
	noErr(t, err)
	equal(t, got, tok)
	_, err = ts.GetByHash(ctx, hash2)
	wantErr(t, err, store.ErrNotFound)

	admin, err := ts.Create(ctx, store.APIToken{Name: "admin", Role: "admin", Hash: hash2})
	noErr(t, err)
	list, err := ts.List(ctx)
	noErr(t, err)
	equal(t, list, []store.APIToken{admin, tok})

	at := time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.FixedZone("X", 3600))
	noErr(t, ts.Touch(ctx, tok.ID, at))
	got, err = ts.GetByHash(ctx, hash1)
	noErr(t, err)
	want := tok
	want.LastUsedAt = ptr(at.UTC().Truncate(time.Microsecond))
	equal(t, got, want)
	wantErr(t, ts.Touch(ctx, "no-such-token", at), store.ErrNotFound)

	noErr(t, ts.Delete(ctx, tok.ID))
	_, err = ts.GetByHash(ctx, hash1)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, ts.Delete(ctx, tok.ID), store.ErrNotFound)
	wantErr(t, ts.Touch(ctx, tok.ID, at), store.ErrNotFound)
	list, err = ts.List(ctx)
	noErr(t, err)
	equal(t, list, []store.APIToken{admin})

	// Touch is no event; the events carry no hash.
	equal(t, eventTypes(t, st, tok.ID), []string{"token.created", "token.deleted"})
	var payload map[string]any
	lastPayload(t, st, tok.ID, "token.deleted", &payload)
	if payload["id"] != tok.ID || payload["name"] != "deploy-bot" || payload["role"] != "developer" {
		t.Fatalf("token.deleted payload %v", payload)
	}
	for _, e := range pending(t, st) {
		if bytes.Contains(e.Payload, []byte(hash1)) || bytes.Contains(e.Payload, []byte(hash2)) || bytes.Contains(e.Payload, []byte("hash")) {
			t.Fatalf("event %s carries the hash: %s", e.Type, e.Payload)
		}
	}
}

func testCache(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	c := st.Cache()
	put := func(scope, key string, expires *time.Time) store.CacheEntry {
		t.Helper()
		e, err := c.Put(ctx, store.CacheEntry{Scope: scope, Key: key, Size: 42, Path: scope + "/" + key + ".tar.zst", ExpiresAt: expires})
		noErr(t, err)
		return e
	}
	abc := put("s1", "deps-linux-abc", nil)
	def := put("s1", "deps-linux-def", nil)
	put("s2", "deps-linux-xyz", nil)
	old := put("s1", "old", ptr(time.Now().Add(-time.Hour)))
	_, err := c.Put(ctx, store.CacheEntry{Scope: "s1", Key: "no-path"})
	wantErr(t, err, store.ErrInvalid)

	e, err := c.Find(ctx, "s1", "deps-linux-abc", "deps-linux-")
	noErr(t, err)
	equal(t, e.Key, "deps-linux-abc")
	if e.LastUsedAt.Before(abc.LastUsedAt) {
		t.Fatalf("LastUsedAt %v not stamped", e.LastUsedAt)
	}
	e, err = c.Find(ctx, "s1", "deps-linux-123", "deps-linux-")
	noErr(t, err)
	equal(t, e.Key, def.Key) // the newest with the prefix
	_, err = c.Find(ctx, "s2", "deps-linux-abc")
	wantErr(t, err, store.ErrNotFound)
	_, err = c.Find(ctx, "s1", "old")
	wantErr(t, err, store.ErrNotFound)

	list, err := c.List(ctx)
	noErr(t, err)
	var keys []string
	for _, e := range list {
		keys = append(keys, e.Scope+"/"+e.Key)
	}
	equal(t, keys, []string{"s2/deps-linux-xyz", "s1/old", "s1/deps-linux-abc", "s1/deps-linux-def"})

	expired, err := c.DeleteExpired(ctx)
	noErr(t, err)
	equal(t, expired, []store.CacheEntry{old})
	noErr(t, c.Delete(ctx, "s1", "deps-linux-def"))
	wantErr(t, c.Delete(ctx, "s1", "deps-linux-def"), store.ErrNotFound)
	list, err = c.List(ctx)
	noErr(t, err)
	equal(t, len(list), 2)
	equal(t, eventTypes(t, st, "s1/old"), []string{"cache.saved", "cache.deleted"})
}

func testAudit(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	au := st.Audit()
	var es []store.AuditEntry
	for _, e := range []store.AuditEntry{
		{Actor: "ann", Action: "secret.put", ResourceType: "secret", ResourceID: "organization//TOKEN"},
		{Actor: "bob", Action: "run.cancel", ResourceType: "run", ResourceID: "r1", Details: json.RawMessage(`{"reason":"wrong branch"}`)},
		{Actor: "ann", Action: "run.cancel", ResourceType: "run", ResourceID: "r2"},
	} {
		got, err := au.Record(ctx, e)
		noErr(t, err)
		fresh(t, "Time", got.Time)
		e.ID, e.Time = got.ID, got.Time
		equal(t, got, e)
		es = append([]store.AuditEntry{got}, es...) // newest first
	}
	if es[0].ID <= es[1].ID || es[1].ID <= es[2].ID {
		t.Fatalf("IDs not increasing: %+v", es)
	}
	_, err := au.Record(ctx, store.AuditEntry{Action: "x"})
	wantErr(t, err, store.ErrInvalid)

	list, err := au.List(ctx, store.AuditFilter{})
	noErr(t, err)
	equal(t, list, es)
	list, err = au.List(ctx, store.AuditFilter{Actor: "ann"})
	noErr(t, err)
	equal(t, list, []store.AuditEntry{es[0], es[2]})
	list, err = au.List(ctx, store.AuditFilter{ResourceType: "run", ResourceID: "r1"})
	noErr(t, err)
	equal(t, list, []store.AuditEntry{es[1]})
	list, err = au.List(ctx, store.AuditFilter{Before: es[0].ID, Limit: 1})
	noErr(t, err)
	equal(t, list, []store.AuditEntry{es[1]})
	equal(t, len(pending(t, st)), 0) // audit entries are not events
}

var errBoom = errors.New("boom")

// testOutboxAtomic: a state change and its event commit together or not at
// all.
func testOutboxAtomic(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)

	// A failed transaction leaves neither the rows nor their events.
	err := st.InTx(ctx, func(tx store.Tx) error {
		p, err := tx.Pipelines().Create(ctx, store.Pipeline{Name: "doomed"})
		if err != nil {
			return err
		}
		if _, err := tx.Runs().Create(ctx, store.Run{PipelineID: p.ID}); err != nil {
			return err
		}
		ev, err := store.NewEvent("pipeline", p.ID, "pipeline.custom", map[string]string{"hello": "world"})
		if err != nil {
			return err
		}
		if err := tx.Outbox().Append(ctx, ev); err != nil {
			return err
		}
		if _, err := tx.Pipelines().Get(ctx, p.ID); err != nil { // a Tx reads its own writes
			return err
		}
		return errBoom
	})
	wantErr(t, err, errBoom)
	_, err = st.Pipelines().GetByName(ctx, "doomed")
	wantErr(t, err, store.ErrNotFound)
	equal(t, len(pending(t, st)), 0)

	// A method that fails on its own leaves no event either.
	p, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	noErr(t, err)
	_, err = st.Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	wantErr(t, err, store.ErrConflict)
	equal(t, len(pending(t, st)), 1)

	// Inside a transaction, a failed method is undone alone: the caller may
	// go on, and commits the rest with its events.
	var run store.Run
	var job store.Job
	err = st.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Pipelines().Create(ctx, store.Pipeline{Name: "p"}); !errors.Is(err, store.ErrConflict) {
			return errors.New("want a conflict")
		}
		var err error
		if run, err = tx.Runs().Create(ctx, store.Run{PipelineID: p.ID}); err != nil {
			return err
		}
		js, err := tx.Jobs().Enqueue(ctx, store.Job{RunID: run.ID, Name: "build"})
		if err != nil {
			return err
		}
		job = js[0]
		ev, err := store.NewEvent("run", run.ID, "run.note", nil)
		if err != nil {
			return err
		}
		return tx.Outbox().Append(ctx, ev)
	})
	noErr(t, err)
	var types []string
	for _, e := range pending(t, st) {
		types = append(types, e.Type+" "+e.AggregateID)
	}
	equal(t, types, []string{"pipeline.created " + p.ID, "run.queued " + run.ID, "job.queued " + job.ID, "run.note " + run.ID})
	got, err := st.Jobs().Get(ctx, job.ID)
	noErr(t, err)
	equal(t, got, job)

	err = st.Outbox().Append(ctx, store.Event{Type: "x.y", Aggregate: "x", AggregateID: "1", Payload: json.RawMessage(`{bad`)})
	wantErr(t, err, store.ErrInvalid)
}

func testOutboxRelay(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	for _, name := range []string{"a", "b", "c"} {
		_, err := st.Pipelines().Create(ctx, store.Pipeline{Name: name})
		noErr(t, err)
	}
	first, err := st.Outbox().Pending(ctx, 2)
	noErr(t, err)
	equal(t, len(first), 2)
	for _, e := range first {
		if e.ID == "" || e.Type != "pipeline.created" || e.Aggregate != "pipeline" {
			t.Fatalf("event %+v", e)
		}
		fresh(t, "CreatedAt", e.CreatedAt)
	}
	var p store.Pipeline
	noErr(t, json.Unmarshal(first[0].Payload, &p))
	equal(t, p.Name, "a")

	noErr(t, st.Outbox().MarkPublished(ctx, first[0].ID, first[1].ID, "no-such-event"))
	rest, err := st.Outbox().Pending(ctx, 10)
	noErr(t, err)
	if len(rest) != 1 || json.Unmarshal(rest[0].Payload, &p) != nil || p.Name != "c" {
		t.Fatalf("pending after MarkPublished: %+v", rest)
	}
	n, err := st.Outbox().Prune(ctx, time.Now().Add(-time.Hour))
	noErr(t, err)
	equal(t, n, 0)
	n, err = st.Outbox().Prune(ctx, time.Now().Add(time.Hour))
	noErr(t, err)
	equal(t, n, 2)
	rest, err = st.Outbox().Pending(ctx, 10)
	noErr(t, err)
	equal(t, len(rest), 1)
}

// testConcurrentOpen: servers starting together on an empty database migrate
// it once.
func testConcurrentOpen(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	const n = 4
	stores := make([]store.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = open(t) })
	}
	wg.Wait()
	for _, err := range errs {
		noErr(t, err)
	}
	for i, st := range stores {
		_, err := st.Pipelines().Create(ctx, store.Pipeline{Name: string(rune('a' + i))})
		noErr(t, err)
	}
	list, err := openStore(t, open).Pipelines().List(ctx)
	noErr(t, err)
	equal(t, len(list), n)
}
