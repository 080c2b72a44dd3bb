package scheduler_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
)

var errAuditDown = errors.New("the audit log is down")

// auditDown is a store whose audit log refuses entries while down is set,
// inside transactions too.
type auditDown struct {
	store.Store
	down atomic.Bool
}

func (s *auditDown) Audit() store.Audit { return downAudit{s.Store.Audit(), s} }

func (s *auditDown) InTx(ctx context.Context, fn func(tx store.Tx) error) error {
	return s.Store.InTx(ctx, func(tx store.Tx) error { return fn(downTx{tx, s}) })
}

type downTx struct {
	store.Tx
	s *auditDown
}

func (t downTx) Audit() store.Audit { return downAudit{t.Tx.Audit(), t.s} }

type downAudit struct {
	store.Audit
	s *auditDown
}

func (a downAudit) Record(ctx context.Context, e store.AuditEntry) (store.AuditEntry, error) {
	if a.s.down.Load() {
		return store.AuditEntry{}, errAuditDown
	}
	return a.Audit.Record(ctx, e)
}

// TestAuditInTheChangesTransaction (issue 11.7): each mutating call writes
// its audit entry in the change's transaction, so that a change is never
// stored without its entry: while the audit log refuses entries, every
// call fails and changes nothing; once it accepts them, each call leaves
// its entry.
func TestAuditInTheChangesTransaction(t *testing.T) {
	t.Parallel()
	var st *auditDown
	b := setupStore(t, 1, func(db store.Store) store.Store { st = &auditDown{Store: db}; return st })
	ctx := t.Context()
	db := st.Store

	gated := b.trigger(t, twoApprovers, scheduler.TriggerRequest{Actor: "alice"})
	b.waitRun(t, gated.ID, store.RunWaiting)
	queued, err := b.svc.SubmitJob(ctx, jobspec.Spec{Name: "queued", Command: "true", Labels: []string{"nobody-has-this"}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	agent, err := db.Agents().Register(ctx, store.Agent{ID: store.NewID(), Name: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	p := b.pipeline(t, twoApprovers)

	st.down.Store(true)
	calls := []struct {
		action string
		call   func() error
		same   func() bool // the change was not made
	}{
		{"run.trigger", func() error {
			_, err := b.svc.TriggerRun(ctx, p.ID, scheduler.TriggerRequest{Actor: "mallory"})
			return err
		}, func() bool {
			runs, err := db.Runs().List(ctx, store.RunFilter{PipelineID: p.ID})
			return err == nil && len(runs) == 0
		}},
		{"job.submit", func() error {
			_, err := b.svc.SubmitJob(ctx, jobspec.Spec{Name: "sneaky", Command: "true"}, "mallory")
			return err
		}, func() bool {
			jobs, err := db.Jobs().List(ctx, store.JobFilter{})
			for _, j := range jobs {
				if j.Name == "sneaky" {
					return false
				}
			}
			return err == nil
		}},
		{"job.cancel", func() error {
			_, err := b.svc.CancelJob(ctx, queued.ID, "mallory")
			return err
		}, func() bool {
			j, err := db.Jobs().Get(ctx, queued.ID)
			return err == nil && j.State == store.JobQueued
		}},
		{"run.approve", func() error {
			_, err := b.svc.Approve(ctx, gated.ID, "deploy", scheduler.Vote{Approve: true, Actor: "alice"})
			return err
		}, func() bool {
			g := b.gate(t, gated.ID, "deploy")
			return len(g.Votes) == 0
		}},
		{"run.cancel", func() error {
			_, err := b.svc.CancelRun(ctx, gated.ID, "mallory")
			return err
		}, func() bool {
			r, err := db.Runs().Get(ctx, gated.ID)
			return err == nil && r.Status == store.RunWaiting
		}},
		{"agent.drain", func() error {
			_, err := b.svc.DrainAgent(ctx, agent.ID, "mallory")
			return err
		}, func() bool {
			a, err := db.Agents().Get(ctx, agent.ID)
			return err == nil && a.Status != store.AgentDraining
		}},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, errAuditDown) {
			t.Errorf("%s while the audit log is down: %v, want its error", c.action, err)
		}
		if !c.same() {
			t.Errorf("%s: the change was made without its audit entry", c.action)
		}
	}

	st.down.Store(false)
	for _, c := range calls {
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.action, err)
		}
		if c.same() {
			t.Errorf("%s: no change", c.action)
		}
		entries, err := db.Audit().List(ctx, store.AuditFilter{Actor: "mallory", Limit: 1})
		if c.action == "run.approve" {
			entries, err = db.Audit().List(ctx, store.AuditFilter{Actor: "alice", Limit: 1})
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Action != c.action {
			t.Errorf("%s: newest audit entry %+v", c.action, entries)
		}
	}
}
