package agentsvc

import (
	"context"
	"slices"

	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
)

// maxLook bounds the queued jobs a round of placement reads, from the head
// of the queue: jobs behind more that fit no free agent wait for a later
// round.
const maxLook = 2000

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

// placeRound is one round of place. It reads the queue in pages, the
// first a few times the free slots, each next one twice as large, until the
// agents are full, the queue ends or maxLook jobs were read.
func (s *Server) placeRound(ctx context.Context) {
	cands, sessions := s.candidates()
	slots := freeSlots(cands)
	if slots == 0 {
		return
	}
	for limit, offset := 4*slots+16, 0; offset < maxLook; limit *= 2 {
		ws, err := s.ctl.Waiting(ctx, limit, offset)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("read the queue", "err", err)
			}
			return
		}
		taken := 0
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
			taken++
			if sess.ctx.Err() != nil {
				sess.giveBack(a)
				continue
			}
			sess.push(ctx, a, w.Need.Resources)
			i := slices.IndexFunc(cands, func(c scheduler.Candidate) bool { return c.ID == p.Agent })
			cands[i].Running++
			cands[i].Used = cands[i].Used.Plus(w.Need.Resources)
			if freeSlots(cands) == 0 {
				return
			}
		}
		if len(ws) < limit {
			return
		}
		offset += len(ws) - taken // the jobs taken left the queue
	}
}

// freeSlots counts the candidates' free slots.
func freeSlots(cs []scheduler.Candidate) int {
	n := 0
	for _, c := range cs {
		n += max(c.Slots-c.Running, 0)
	}
	return n
}

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
