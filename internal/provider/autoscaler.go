package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/store"
)

// Control is what the autoscaler needs of the control plane besides the
// store: bootstrap tokens for new workers, and drains before it destroys
// one.
type Control interface {
	CreateToken(ctx context.Context, ttl time.Duration, labels []string, createdBy string) (string, store.BootstrapToken, error)
	DrainAgent(ctx context.Context, id, actor string) (store.Agent, error)
}

// Autoscaler keeps a provider's pool at the size the queue asks for: the
// busy workers plus ScaleFactor workers per queued job, between Min and
// Max. It adds workers at once and removes only those idle for Idle. Of
// the servers sharing a store, one at a time scales a provider's pool: the
// holder of its lease.
type Autoscaler struct {
	Store    store.Store
	Control  Control
	Provider Provider
	Server   string   // the gRPC address the workers' agents dial
	Labels   []string // of the workers' agents
	Min, Max int
	// ScaleFactor is how many workers a queued job asks for; default 1.
	ScaleFactor float64
	// Idle is how long a worker may run no job before it is destroyed
	// (while the pool is above Min); default 5m.
	Idle time.Duration
	// Register is how long a new worker's agent has to register before
	// the worker is destroyed; default 1m.
	Register time.Duration
	// Interval is the time between two reconciliations; default 2s.
	Interval time.Duration
	// Holder names this autoscaler in the lease that elects one per
	// provider among the servers sharing the store; default a random ID.
	Holder string
	Logger *slog.Logger
	// Now is the clock that Idle and Register are measured with; default
	// time.Now.
	Now func() time.Time

	leading   bool                 // whether the last reconciliation held the lease
	idleSince map[string]time.Time // by worker ID
	unhealthy error                // the provider's last health error, logged once
}

func (a *Autoscaler) defaults() {
	if a.ScaleFactor <= 0 {
		a.ScaleFactor = 1
	}
	if a.Idle <= 0 {
		a.Idle = 5 * time.Minute
	}
	if a.Register <= 0 {
		a.Register = time.Minute
	}
	if a.Interval <= 0 {
		a.Interval = 2 * time.Second
	}
	if a.Holder == "" {
		a.Holder = store.NewID()
	}
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.idleSince == nil {
		a.idleSince = map[string]time.Time{}
	}
}

// Run reconciles every Interval, and as soon as jobs are queued (queued
// returns a channel closed when they next are), until ctx is done.
// Workers keep running when it returns, and it gives up its lease: another
// server's autoscaler, or the next one's, takes them over from the store.
func (a *Autoscaler) Run(ctx context.Context, queued func() <-chan struct{}) {
	a.defaults()
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := a.Store.Leases().Release(ctx, a.lease(), a.Holder); err != nil {
			a.Logger.Error("autoscaler: release the lease", "err", err)
		}
	}()
	for {
		wake := queued()
		if err := a.Reconcile(ctx); err != nil && ctx.Err() == nil {
			a.Logger.Error("autoscaler", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// Reconcile moves every worker's provisioning along, destroys what must
// go, and then sizes the pool; it does nothing while another autoscaler
// holds the provider's lease.
func (a *Autoscaler) Reconcile(ctx context.Context) error {
	a.defaults()
	name := a.Provider.Name()
	// The lease outlives a few missed reconciliations, so that a busy
	// holder keeps it, and is taken over soon after its holder is gone.
	leading, err := a.Store.Leases().Acquire(ctx, a.lease(), a.Holder, max(5*a.Interval, 10*time.Second))
	if err != nil {
		return err
	}
	if leading != a.leading {
		msg := "autoscaler: this server scales the pool"
		if !leading {
			msg = "autoscaler: another server scales the pool"
		}
		a.Logger.Info(msg, "provider", name, "holder", a.Holder)
		a.leading = leading
	}
	if !leading {
		clear(a.idleSince) // the holder keeps its own count
		return nil
	}
	workers, err := a.Store.Workers().List(ctx, name, store.WorkerProvisioning, store.WorkerReady, store.WorkerTerminating)
	if err != nil {
		return err
	}
	instances, err := a.Provider.List(ctx)
	if err != nil {
		return fmt.Errorf("%s: list workers: %w", name, err)
	}
	byWorker := map[string]Instance{}
	for _, in := range instances {
		byWorker[in.WorkerID] = in
	}
	var errs []error
	var ready, busy []store.Worker
	provisioning := 0
	for _, w := range workers {
		in, exists := byWorker[w.ID]
		delete(byWorker, w.ID)
		if w.Handle == "" && exists { // the server stopped between creating and recording it
			if w, err = a.Store.Workers().Update(ctx, w.ID, store.WorkerUpdate{Handle: in.Handle}); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		switch w.State {
		case store.WorkerTerminating:
			errs = append(errs, a.destroy(ctx, w, store.WorkerTerminated, ""))
		case store.WorkerProvisioning:
			w, err := a.advance(ctx, w, exists && in.Running)
			switch {
			case err != nil:
				errs = append(errs, err)
			case w.State == store.WorkerProvisioning:
				provisioning++
			case w.State == store.WorkerReady:
				ready = append(ready, w)
			}
		case store.WorkerReady:
			if !exists || !in.Running {
				errs = append(errs, a.destroy(ctx, w, store.WorkerTerminated, "the worker stopped"))
				continue
			}
			ready = append(ready, w)
		}
	}
	for _, in := range byWorker { // made by this provider, but by no live worker row
		a.Logger.Info("autoscaler: removing an orphaned worker", "worker_id", in.WorkerID, "handle", in.Handle)
		errs = append(errs, a.Provider.Destroy(ctx, in.Handle))
	}
	now := a.Now()
	var idle []store.Worker
	for _, w := range ready {
		working, err := a.working(ctx, w.AgentID)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		if working {
			busy = append(busy, w)
			delete(a.idleSince, w.ID)
			continue
		}
		if _, ok := a.idleSince[w.ID]; !ok {
			a.idleSince[w.ID] = now
		}
		idle = append(idle, w)
	}
	queued, err := a.Store.Jobs().Count(ctx, store.JobQueued)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	want := a.Desired(queued, len(busy))
	have := provisioning + len(ready)
	switch {
	case want > have:
		if err := a.Provider.Health(ctx); err != nil {
			if a.unhealthy == nil || a.unhealthy.Error() != err.Error() {
				a.Logger.Error("autoscaler: the provider cannot create workers", "provider", name, "err", err)
			}
			a.unhealthy = err
			break
		}
		a.unhealthy = nil
		// In parallel: a provider takes its time to start each.
		created := make(chan error, want-have)
		for range want - have {
			go func() { created <- a.create(ctx) }()
		}
		for range want - have {
			errs = append(errs, <-created)
		}
	case want < have:
		// The longest idle first, and only those idle for long enough.
		slices.SortFunc(idle, func(x, y store.Worker) int { return a.idleSince[x.ID].Compare(a.idleSince[y.ID]) })
		for _, w := range idle[:min(len(idle), have-want)] {
			if now.Sub(a.idleSince[w.ID]) < a.Idle {
				break
			}
			errs = append(errs, a.retire(ctx, w))
		}
	}
	return errors.Join(errs...)
}

// lease names the lease on the provider's pool.
func (a *Autoscaler) lease() string { return "autoscaler/" + a.Provider.Name() }

// working reports whether an agent holds a job.
func (a *Autoscaler) working(ctx context.Context, agentID string) (bool, error) {
	for _, st := range []store.JobState{store.JobAssigned, store.JobRunning} {
		held, err := a.Store.Jobs().List(ctx, store.JobFilter{WorkerID: agentID, State: st, Limit: 1})
		if err != nil || len(held) > 0 {
			return len(held) > 0, err
		}
	}
	return false, nil
}

// Desired is the pool size for queued jobs and busy workers: the busy
// ones plus ScaleFactor per queued job, rounded up, between Min and Max.
func (a *Autoscaler) Desired(queued, busy int) int {
	n := busy + int(math.Ceil(float64(queued)*a.ScaleFactor))
	return max(a.Min, min(a.Max, n))
}

// create provisions one worker: its token, its row, then its machine.
func (a *Autoscaler) create(ctx context.Context) error {
	name := a.Provider.Name()
	token, tok, err := a.Control.CreateToken(ctx, max(a.Register, pki.MinTokenTTL), a.Labels, "provider:"+name)
	if err != nil {
		return fmt.Errorf("autoscaler: bootstrap token: %w", err)
	}
	w, err := a.Store.Workers().Create(ctx, store.Worker{
		Provider: name, TokenID: tok.ID, Deadline: a.Now().Add(a.Register),
	})
	if err != nil {
		return err
	}
	handle, err := a.Provider.Create(ctx, Spec{ID: w.ID, Server: a.Server, Token: token, Labels: a.Labels})
	if err != nil {
		_, uerr := a.Store.Workers().Update(ctx, w.ID, store.WorkerUpdate{State: store.WorkerFailed, Error: err.Error()})
		return errors.Join(fmt.Errorf("autoscaler: %s: create a worker: %w", name, err), uerr)
	}
	a.Logger.Info("autoscaler: worker provisioned", "worker_id", w.ID, "handle", handle)
	_, err = a.Store.Workers().Update(ctx, w.ID, store.WorkerUpdate{Handle: handle})
	return err
}

// advance moves a provisioning worker on: ready when its agent has
// registered; destroyed, failed, when it stopped or its time is up.
func (a *Autoscaler) advance(ctx context.Context, w store.Worker, running bool) (store.Worker, error) {
	tok, err := a.Store.BootstrapTokens().Get(ctx, w.TokenID)
	if err != nil {
		return w, err
	}
	switch {
	case tok.UsedBy != "":
		a.Logger.Info("autoscaler: worker ready", "worker_id", w.ID, "agent_id", tok.UsedBy)
		return a.Store.Workers().Update(ctx, w.ID, store.WorkerUpdate{State: store.WorkerReady, AgentID: tok.UsedBy, Handle: w.Handle})
	case a.Now().After(w.Deadline):
		w.State = store.WorkerFailed
		return w, a.destroy(ctx, w, store.WorkerFailed, fmt.Sprintf("its agent did not register within %s", a.Register))
	case w.Handle != "" && !running:
		w.State = store.WorkerFailed
		return w, a.destroy(ctx, w, store.WorkerFailed, "the worker stopped before its agent registered")
	}
	return w, nil
}

// retire drains an idle worker's agent, so that it takes no more jobs,
// and destroys it.
func (a *Autoscaler) retire(ctx context.Context, w store.Worker) error {
	if _, err := a.Control.DrainAgent(ctx, w.AgentID, "provider:"+a.Provider.Name()); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	delete(a.idleSince, w.ID)
	a.Logger.Info("autoscaler: retiring an idle worker", "worker_id", w.ID, "agent_id", w.AgentID)
	return a.destroy(ctx, w, store.WorkerTerminated, "")
}

// destroy records that w is terminating, destroys it, deregisters its
// agent, and records the final state. A job its agent still held goes
// back to the queue: the agent hands it back when stopped, or its lease
// runs out.
func (a *Autoscaler) destroy(ctx context.Context, w store.Worker, final store.WorkerState, reason string) error {
	if w.State != store.WorkerTerminating && final == store.WorkerTerminated {
		if _, err := a.Store.Workers().Update(ctx, w.ID, store.WorkerUpdate{State: store.WorkerTerminating, Error: reason}); err != nil {
			return err
		}
	}
	if w.Handle != "" {
		if err := a.Provider.Destroy(ctx, w.Handle); err != nil {
			return fmt.Errorf("autoscaler: destroy worker %s: %w", w.ID, err)
		}
	}
	if w.AgentID != "" {
		if err := a.Store.Agents().Delete(ctx, w.AgentID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	delete(a.idleSince, w.ID)
	if reason != "" {
		a.Logger.Warn("autoscaler: worker "+string(final), "worker_id", w.ID, "reason", reason)
	}
	_, err := a.Store.Workers().Update(ctx, w.ID, store.WorkerUpdate{State: final, Error: reason})
	return err
}
