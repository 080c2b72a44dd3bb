package agentsvc

import (
	"context"
	"slices"

	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
)

// placeBatch is how many queued jobs a round of placement considers, from
// the head of the queue.
const placeBatch = 500

// place puts queued jobs on the agents connected to this server that have
// a free slot, each where the Placer's strategy says among those with the
// labels and the free resources it asks for, and pushes them. A job that no
// agent fits stays queued. One round runs at a time, seeing the jobs the
// last one pushed; a call during a round has it run once more instead of
// waiting.
func (s *Server) place(ctx context.Context) {
	if !s.placeMu.TryLock() {
		s.placeAgain.Store(true)
		return
	}
	defer s.placeMu.Unlock()
	for {
		s.placeAgain.Store(false)
		s.placeRound(ctx)
		if !s.placeAgain.Load() || ctx.Err() != nil {
			return
		}
	}
}

// placeRound is one round of place.
func (s *Server) placeRound(ctx context.Context) {
	cands, sessions := s.candidates()
	if !slices.ContainsFunc(cands, free) {
		return
	}
	ws, err := s.ctl.Waiting(ctx, placeBatch)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("read the queue", "err", err)
		}
		return
	}
	for _, w := range ws {
		p := s.placer.Place(w.Need, cands)
		if p.Agent == "" {
			continue
		}
		sess := sessions[p.Agent]
		a, ok, err := s.ctl.Take(ctx, w.Job.ID, p.Agent)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("take a job", "job_id", w.Job.ID, "agent_id", p.Agent, "err", err)
			}
			return
		}
		if !ok {
			continue // another server's agent took it, or it failed to start
		}
		if sess.ctx.Err() != nil {
			sess.giveBack(a)
			continue
		}
		sess.push(ctx, a, w.Need.Resources)
		i := slices.IndexFunc(cands, func(c scheduler.Candidate) bool { return c.ID == p.Agent })
		cands[i].Running++
		cands[i].Used = cands[i].Used.Plus(w.Need.Resources)
		if !slices.ContainsFunc(cands, free) {
			return
		}
	}
}

func free(c scheduler.Candidate) bool { return c.Running < c.Slots }

// candidates returns the agents connected to this server that take jobs
// (not draining), as placement sees them.
func (s *Server) candidates() ([]scheduler.Candidate, map[string]*session) {
	s.mu.Lock()
	sessions := make(map[string]*session, len(s.sessions))
	for id, sess := range s.sessions {
		sessions[id] = sess
	}
	s.mu.Unlock()
	cands := make([]scheduler.Candidate, 0, len(sessions))
	for id, sess := range sessions {
		if sess.ctx.Err() != nil {
			continue
		}
		sess.mu.Lock()
		if !sess.draining {
			c := scheduler.Candidate{ID: id, Labels: sess.labels, OS: sess.os, Arch: sess.arch,
				Slots: sess.capacity, Running: len(sess.jobs), Total: sess.machine}
			for _, h := range sess.jobs {
				c.Used = c.Used.Plus(h.need)
			}
			cands = append(cands, c)
		}
		sess.mu.Unlock()
	}
	return cands, sessions
}

// machine is what an agent reported it has.
func machine(a store.Agent) scheduler.Resources {
	return scheduler.Resources{CPUMillis: a.CPUMillis, Memory: a.MemoryBytes, GPUs: a.GPUs}
}
