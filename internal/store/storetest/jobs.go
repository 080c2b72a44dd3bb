package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// names returns the jobs' names, by which the tests tell jobs apart.
func names(js []store.Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.Name
	}
	return out
}

func enqueue(t *testing.T, st store.Tx, jobs ...store.Job) []store.Job {
	t.Helper()
	js, err := st.Jobs().Enqueue(context.Background(), jobs...)
	noErr(t, err)
	return js
}

func testClaimOrder(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	enqueue(t, st, store.Job{Name: "low-1"}, store.Job{Name: "low-2"})
	enqueue(t, st, store.Job{Name: "high-1", Priority: 10})
	enqueue(t, st, store.Job{Name: "mid", Priority: 5}, store.Job{Name: "high-2", Priority: 10})
	enqueue(t, st, store.Job{Name: "low-3"})

	first, err := st.Jobs().Claim(ctx, "w1", nil, 2, time.Minute)
	noErr(t, err)
	equal(t, names(first), []string{"high-1", "high-2"})
	rest, err := st.Jobs().Claim(ctx, "w2", nil, 10, time.Minute)
	noErr(t, err)
	equal(t, names(rest), []string{"mid", "low-1", "low-2", "low-3"})
	for _, j := range append(first, rest...) {
		if j.State != store.JobAssigned || j.Attempt != 1 || j.LeaseUntil == nil || time.Until(*j.LeaseUntil) < 30*time.Second {
			t.Fatalf("claimed %+v", j)
		}
	}
	if first[0].WorkerID != "w1" || rest[0].WorkerID != "w2" {
		t.Fatalf("workers %q, %q", first[0].WorkerID, rest[0].WorkerID)
	}
	none, err := st.Jobs().Claim(ctx, "w3", nil, 10, time.Minute)
	noErr(t, err)
	equal(t, len(none), 0)
	_, err = st.Jobs().Claim(ctx, "", nil, 10, time.Minute)
	wantErr(t, err, store.ErrInvalid)
}

func testClaimLabels(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	enqueue(t, st,
		store.Job{Name: "linux", Labels: []string{"linux"}},
		store.Job{Name: "gpu", Labels: []string{"linux", "gpu"}},
		store.Job{Name: "any"},
		store.Job{Name: "later", State: store.JobPending})

	js, err := st.Jobs().Claim(ctx, "w1", []string{"linux", "amd64"}, 10, time.Minute)
	noErr(t, err)
	equal(t, names(js), []string{"linux", "any"})
	js, err = st.Jobs().Claim(ctx, "w2", nil, 10, time.Minute)
	noErr(t, err)
	equal(t, len(js), 0)
	js, err = st.Jobs().Claim(ctx, "w3", []string{"gpu", "arm64", "linux"}, 10, time.Minute)
	noErr(t, err)
	equal(t, names(js), []string{"gpu"})
	if strings.Join(js[0].Labels, ",") != "linux,gpu" {
		t.Fatalf("labels %v", js[0].Labels)
	}

	// A pending job is claimable only once queued.
	pend, err := st.Jobs().List(ctx, store.JobFilter{State: store.JobPending})
	noErr(t, err)
	equal(t, names(pend), []string{"later"})
	if pend[0].QueuedAt != nil {
		t.Fatalf("pending job queued at %v", pend[0].QueuedAt)
	}
	queued, err := st.Jobs().Queue(ctx, pend[0].ID, "no-such-job")
	noErr(t, err)
	if len(queued) != 1 || queued[0].State != store.JobQueued || queued[0].QueuedAt == nil {
		t.Fatalf("queued %+v", queued)
	}
	again, err := st.Jobs().Queue(ctx, pend[0].ID)
	noErr(t, err)
	equal(t, len(again), 0)
	js, err = st.Jobs().Claim(ctx, "w2", nil, 10, time.Minute)
	noErr(t, err)
	equal(t, names(js), []string{"later"})
	equal(t, eventTypes(t, st, pend[0].ID), []string{"job.pending", "job.queued", "job.assigned"})
}

func testJobLifecycle(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	jobs := st.Jobs()

	in := store.Job{Name: "build", Spec: json.RawMessage(`{"steps":[{"run":"make"}]}`), Labels: []string{"linux"}, Priority: 3}
	js := enqueue(t, st, in)
	j := js[0]
	if j.ID == "" || j.State != store.JobQueued || j.MaxAttempts != store.DefaultMaxAttempts || j.Attempt != 0 || j.QueuedAt == nil ||
		string(j.Spec) != string(in.Spec) {
		t.Fatalf("enqueued %+v", j)
	}
	fresh(t, "CreatedAt", j.CreatedAt)
	got, err := jobs.Get(ctx, j.ID)
	noErr(t, err)
	equal(t, got, j)
	_, err = jobs.Enqueue(ctx, store.Job{Name: "bad", State: store.JobRunning})
	wantErr(t, err, store.ErrInvalid)
	_, err = jobs.Enqueue(ctx, store.Job{Name: "dup", ID: j.ID})
	wantErr(t, err, store.ErrConflict)
	_, err = jobs.Enqueue(ctx, store.Job{Name: "orphan", RunID: "no-such-run"})
	wantErr(t, err, store.ErrNotFound)

	claimed, err := jobs.Claim(ctx, "w1", []string{"linux"}, 1, time.Minute)
	noErr(t, err)
	equal(t, len(claimed), 1)
	l := claimed[0].Lease()
	equal(t, l, store.Lease{JobID: j.ID, WorkerID: "w1", Attempt: 1})
	var payload store.Job
	lastPayload(t, st, j.ID, "job.assigned", &payload)
	equal(t, payload, claimed[0])

	_, err = jobs.Start(ctx, store.Lease{JobID: j.ID, WorkerID: "w2", Attempt: 1})
	wantErr(t, err, store.ErrConflict)
	_, err = jobs.Start(ctx, store.Lease{JobID: j.ID, WorkerID: "w1", Attempt: 2})
	wantErr(t, err, store.ErrConflict)
	_, err = jobs.Start(ctx, store.Lease{JobID: "no-such-job", WorkerID: "w1", Attempt: 1})
	wantErr(t, err, store.ErrNotFound)
	running, err := jobs.Start(ctx, l)
	noErr(t, err)
	if running.State != store.JobRunning || running.StartedAt == nil {
		t.Fatalf("started %+v", running)
	}
	_, err = jobs.Start(ctx, l)
	wantErr(t, err, store.ErrConflict)

	_, err = jobs.Complete(ctx, store.Result{Lease: l, State: store.JobRunning})
	wantErr(t, err, store.ErrInvalid)
	done, err := jobs.Complete(ctx, store.Result{Lease: l, State: store.JobFailed, ExitCode: ptr(2), Error: "exit status 2"})
	noErr(t, err)
	equal(t, len(done), 1)
	if d := done[0]; d.State != store.JobFailed || d.ExitCode == nil || *d.ExitCode != 2 || d.Error != "exit status 2" ||
		d.FinishedAt == nil || d.LeaseUntil != nil || d.WorkerID != "w1" {
		t.Fatalf("completed %+v", d)
	}
	again, err := jobs.Complete(ctx, store.Result{Lease: l, State: store.JobSucceeded})
	noErr(t, err)
	equal(t, len(again), 0)
	equal(t, eventTypes(t, st, j.ID), []string{"job.queued", "job.assigned", "job.running", "job.failed"})

	// Extend renews the leases of the jobs a worker holds.
	js = enqueue(t, st, store.Job{Name: "a"}, store.Job{Name: "b"})
	held, err := jobs.Claim(ctx, "w2", nil, 2, time.Second)
	noErr(t, err)
	equal(t, len(held), 2)
	extended, err := jobs.Extend(ctx, "w2", time.Hour)
	noErr(t, err)
	want := []string{js[0].ID, js[1].ID}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	equal(t, extended, want)
	a, err := jobs.Get(ctx, js[0].ID)
	noErr(t, err)
	if time.Until(*a.LeaseUntil) < 50*time.Minute {
		t.Fatalf("lease until %v after Extend", a.LeaseUntil)
	}
	extended, err = jobs.Extend(ctx, "w9", time.Hour)
	noErr(t, err)
	equal(t, len(extended), 0)

	// Cancel stops a job for good, keeping its worker; its lease is dead.
	cancelled, err := jobs.Cancel(ctx, a.ID, "cancelled by ann")
	noErr(t, err)
	if cancelled.State != store.JobCancelled || cancelled.WorkerID != "w2" || cancelled.Error != "cancelled by ann" || cancelled.FinishedAt == nil {
		t.Fatalf("cancelled %+v", cancelled)
	}
	_, err = jobs.Cancel(ctx, a.ID, "again")
	wantErr(t, err, store.ErrConflict)
	_, err = jobs.Cancel(ctx, "no-such-job", "")
	wantErr(t, err, store.ErrNotFound)
	done, err = jobs.Complete(ctx, store.Result{Lease: a.Lease(), State: store.JobSucceeded},
		store.Result{Lease: held[1].Lease(), State: store.JobSucceeded, ExitCode: ptr(0)})
	noErr(t, err)
	equal(t, names(done), []string{held[1].Name})

	for state, want := range map[store.JobState]int{store.JobFailed: 1, store.JobCancelled: 1, store.JobSucceeded: 1, store.JobQueued: 0} {
		n, err := jobs.Count(ctx, state)
		noErr(t, err)
		if n != want {
			t.Fatalf("Count(%s) = %d, want %d", state, n, want)
		}
	}
	list, err := jobs.List(ctx, store.JobFilter{WorkerID: "w2"})
	noErr(t, err)
	equal(t, names(list), []string{"a", "b"})
	list, err = jobs.List(ctx, store.JobFilter{Limit: 2, Offset: 1})
	noErr(t, err)
	equal(t, names(list), []string{"a", "b"})
}

// testLeaseExpiry: a job whose lease expires goes back to the queue with its
// attempt spent; once all are spent it fails. The expired holder is fenced.
func testLeaseExpiry(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	jobs := st.Jobs()
	j := enqueue(t, st, store.Job{Name: "flaky", MaxAttempts: 2})[0]

	requeued := func() store.Job {
		t.Helper()
		var got []store.Job
		eventually(t, "the lease to expire", func() bool {
			js, err := jobs.RequeueExpired(ctx)
			noErr(t, err)
			got = append(got, js...)
			return len(got) > 0
		})
		equal(t, names(got), []string{"flaky"})
		return got[0]
	}

	c1, err := jobs.Claim(ctx, "w1", nil, 1, time.Millisecond)
	noErr(t, err)
	equal(t, c1[0].Attempt, 1)
	r := requeued()
	if r.State != store.JobQueued || r.Attempt != 1 || r.WorkerID != "" || r.LeaseUntil != nil || r.Error != "lease expired" {
		t.Fatalf("requeued %+v", r)
	}
	_, err = jobs.Start(ctx, c1[0].Lease())
	wantErr(t, err, store.ErrConflict)
	done, err := jobs.Complete(ctx, store.Result{Lease: c1[0].Lease(), State: store.JobSucceeded})
	noErr(t, err)
	equal(t, len(done), 0)

	c2, err := jobs.Claim(ctx, "w2", nil, 1, time.Millisecond)
	noErr(t, err)
	equal(t, c2[0].Lease(), store.Lease{JobID: j.ID, WorkerID: "w2", Attempt: 2})
	_, err = jobs.Start(ctx, c2[0].Lease())
	noErr(t, err)
	f := requeued()
	if f.State != store.JobFailed || f.Attempt != 2 || f.WorkerID != "w2" || f.FinishedAt == nil || f.Error != "lease expired" {
		t.Fatalf("failed %+v", f)
	}
	equal(t, eventTypes(t, st, j.ID), []string{"job.queued", "job.assigned", "job.queued", "job.assigned", "job.running", "job.failed"})
}

func testFail(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	jobs := st.Jobs()
	enqueue(t, st, store.Job{Name: "j", MaxAttempts: 2})

	c1, err := jobs.Claim(ctx, "w1", nil, 1, time.Minute)
	noErr(t, err)
	r, err := jobs.Fail(ctx, c1[0].Lease(), "agent shut down")
	noErr(t, err)
	if r.State != store.JobQueued || r.WorkerID != "" || r.Error != "agent shut down" {
		t.Fatalf("after Fail %+v", r)
	}
	_, err = jobs.Fail(ctx, c1[0].Lease(), "again")
	wantErr(t, err, store.ErrConflict)
	_, err = jobs.Fail(ctx, store.Lease{JobID: "no-such-job"}, "")
	wantErr(t, err, store.ErrNotFound)

	c2, err := jobs.Claim(ctx, "w2", nil, 1, time.Minute)
	noErr(t, err)
	f, err := jobs.Fail(ctx, c2[0].Lease(), "workspace lost")
	noErr(t, err)
	if f.State != store.JobFailed || f.Attempt != 2 || f.Error != "workspace lost" || f.FinishedAt == nil {
		t.Fatalf("after last Fail %+v", f)
	}
}

func testLogs(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	j := enqueue(t, st, store.Job{Name: "j"})[0]
	at := time.Date(2026, 5, 1, 12, 0, 0, 123456000, time.UTC)
	lines := func(from, to int64) []store.LogLine {
		var ls []store.LogLine
		for s := from; s <= to; s++ {
			ls = append(ls, store.LogLine{Seq: s, StepID: "step-1", Stream: "stdout", Text: fmt.Sprintf("line %d", s), Time: at})
		}
		return ls
	}

	n, err := st.Logs().Append(ctx, j.ID, lines(1, 5))
	noErr(t, err)
	equal(t, n, 5)
	n, err = st.Logs().Append(ctx, j.ID, lines(3, 7)) // a resend after a reconnect
	noErr(t, err)
	equal(t, n, 2)
	n, err = st.Logs().Append(ctx, j.ID, append(lines(8, 8), lines(8, 8)...))
	noErr(t, err)
	equal(t, n, 1)
	n, err = st.Logs().Append(ctx, j.ID, nil)
	noErr(t, err)
	equal(t, n, 0)
	_, err = st.Logs().Append(ctx, "no-such-job", lines(1, 1))
	wantErr(t, err, store.ErrNotFound)

	page, err := st.Logs().Read(ctx, j.ID, 0, 3)
	noErr(t, err)
	equal(t, page, lines(1, 3))
	page, err = st.Logs().Read(ctx, j.ID, 3, 0)
	noErr(t, err)
	equal(t, page, lines(4, 8))
	page, err = st.Logs().Read(ctx, j.ID, 8, 10)
	noErr(t, err)
	equal(t, len(page), 0)
}

// testTwoServersClaim is the test: two stores (two servers) on one
// database claim 10,000 jobs with several goroutines each, and complete
// them. Every job is claimed exactly once.
func testTwoServersClaim(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	servers := []store.Store{openStore(t, open), openStore(t, open)}
	const total, batch, goroutines = 10_000, 1_000, 4
	for i := 0; i < total; i += batch {
		js := make([]store.Job, batch)
		for k := range js {
			js[k] = store.Job{Name: fmt.Sprintf("job-%d", i+k), Priority: k % 3}
		}
		enqueue(t, servers[i/batch%2], js...)
	}

	var (
		mu      sync.Mutex
		claims  = map[string]int{}
		byStore = make([]int, len(servers))
		wg      sync.WaitGroup
		errs    = make(chan error, len(servers)*goroutines)
	)
	for s, st := range servers {
		for g := range goroutines {
			worker := fmt.Sprintf("server%d-worker%d", s, g)
			wg.Go(func() {
				for {
					js, err := st.Jobs().Claim(ctx, worker, nil, 50, time.Minute)
					if err != nil {
						errs <- err
						return
					}
					if len(js) == 0 {
						return
					}
					results := make([]store.Result, len(js))
					for i, j := range js {
						if j.Attempt != 1 || j.WorkerID != worker {
							errs <- fmt.Errorf("claimed %+v", j)
							return
						}
						results[i] = store.Result{Lease: j.Lease(), State: store.JobSucceeded}
					}
					done, err := st.Jobs().Complete(ctx, results...)
					if err != nil || len(done) != len(js) {
						errs <- fmt.Errorf("completed %d of %d: %v", len(done), len(js), err)
						return
					}
					mu.Lock()
					for _, j := range js {
						claims[j.ID]++
					}
					byStore[s] += len(js)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(claims) != total {
		t.Fatalf("%d jobs claimed, want %d", len(claims), total)
	}
	for id, n := range claims {
		if n != 1 {
			t.Fatalf("job %s claimed %d times", id, n)
		}
	}
	for s, n := range byStore {
		if n == 0 {
			t.Errorf("server %d claimed nothing", s)
		}
	}
	n, err := servers[1].Jobs().Count(ctx, store.JobSucceeded)
	noErr(t, err)
	equal(t, n, total)
	t.Logf("claims per server: %v", byStore)
}

// testTake: Claimable shows what Claim would take, whatever its labels,
// without taking it; Take claims one job of them, once.
func testTake(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	later := time.Now().Add(time.Hour)
	js := enqueue(t, st,
		store.Job{Name: "low"},
		store.Job{Name: "gpu", Labels: []string{"gpu"}, Priority: 5},
		store.Job{Name: "pending", State: store.JobPending},
		store.Job{Name: "not yet", QueuedAt: &later})
	_, err := st.Jobs().Claimable(ctx, 0, 0)
	wantErr(t, err, store.ErrInvalid)
	_, err = st.Jobs().Claimable(ctx, 1, -1)
	wantErr(t, err, store.ErrInvalid)
	got, err := st.Jobs().Claimable(ctx, 10, 0)
	noErr(t, err)
	equal(t, names(got), []string{"gpu", "low"})
	got, err = st.Jobs().Claimable(ctx, 1, 0)
	noErr(t, err)
	equal(t, names(got), []string{"gpu"})
	got, err = st.Jobs().Claimable(ctx, 1, 1)
	noErr(t, err)
	equal(t, names(got), []string{"low"})

	j, err := st.Jobs().Take(ctx, js[1].ID, "w1", time.Minute)
	noErr(t, err)
	if j.State != store.JobAssigned || j.WorkerID != "w1" || j.Attempt != 1 || j.LeaseUntil == nil {
		t.Fatalf("taken %+v", j)
	}
	_, err = st.Jobs().Take(ctx, js[1].ID, "w2", time.Minute)
	wantErr(t, err, store.ErrConflict)
	for _, id := range []string{js[2].ID, js[3].ID} { // pending; queued for later
		_, err = st.Jobs().Take(ctx, id, "w2", time.Minute)
		wantErr(t, err, store.ErrConflict)
	}
	_, err = st.Jobs().Take(ctx, "no-such-job", "w2", time.Minute)
	wantErr(t, err, store.ErrNotFound)
	_, err = st.Jobs().Take(ctx, js[0].ID, "", time.Minute)
	wantErr(t, err, store.ErrInvalid)
	got, err = st.Jobs().Claimable(ctx, 10, 0)
	noErr(t, err)
	equal(t, names(got), []string{"low"})
	equal(t, eventTypes(t, st, js[1].ID), []string{"job.queued", "job.assigned"})
	held, err := st.Jobs().Extend(ctx, "w1", time.Minute) // the lease is w1's, as a claim's
	noErr(t, err)
	equal(t, held, []string{js[1].ID})
}
