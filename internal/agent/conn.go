package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"time"

	"google.golang.org/grpc"

	"github.com/oxide-ci/oxide/internal/agentrpc"
)

// Reconnection backoff: from minBackoff, doubling up to maxBackoff,
// jittered.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// closeWait is how long the agent waits for the server to end the stream
// after its last message, when it shuts down.
const closeWait = 2 * time.Second

// stableSession is how long a session must last for the next reconnect to
// start again from minBackoff, if the server said nothing in it.
const stableSession = 10 * time.Second

// conn holds the agent's session with the server: one Connect stream at a
// time, opened again whenever it breaks.
type conn struct {
	cfg    Config
	client agentrpc.AgentClient
	ctl    *control
	out    *outbox
	log    *slog.Logger
	labels []string
	stats  *hostStats
	// machine is what the agent has for jobs, said in every Hello.
	machine machine
	beat    <-chan struct{} // a heartbeat is wanted now
}

// loop keeps a session open until ctx is done.
func (c *conn) loop(ctx context.Context) {
	delay := minBackoff
	for {
		start := time.Now()
		heard, err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if heard || time.Since(start) > stableSession {
			delay = minBackoff
		}
		wait := jitter(delay)
		c.log.Warn("disconnected from the server", "err", err, "retry_in", wait.Round(time.Millisecond), "unacknowledged", c.out.len())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// jitter returns a duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// session opens a Connect stream, says hello, sends what the server has
// not acknowledged and then whatever comes, and dispatches what the server
// says, until the stream breaks or ctx is done. heard reports whether the
// server said anything.
func (c *conn) session(ctx context.Context) (heard bool, err error) {
	// The stream ends with ctx only after a goodbye (see below).
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(closeWait, cancel) })()
	stream, err := c.client.Connect(sctx, grpc.ForceCodecV2(newCodec()))
	if err != nil {
		return false, err
	}
	hello := &agentrpc.Hello{
		Version: c.cfg.Version, Capacity: int32(c.cfg.Concurrency), Labels: c.labels,
		Running: c.ctl.held(), Draining: c.ctl.isDraining(),
		CpuMillis: c.machine.cpuMillis, MemoryBytes: c.machine.memory, Gpus: int32(c.machine.gpus),
		Os: runtime.GOOS, Arch: runtime.GOARCH,
	}
	if err := stream.Send(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Hello{Hello: hello}}); err != nil {
		return false, recvErr(stream, err)
	}
	c.out.rewind()
	c.log.Info("connected to the server", "server", c.cfg.Server, "running", len(hello.Running), "resending", c.out.len())

	type received struct {
		heard bool
		err   error
	}
	done := make(chan received, 1)
	go func() {
		heard := false
		for {
			m, err := stream.Recv()
			if err != nil {
				cancel()
				done <- received{heard, err}
				return
			}
			heard = true
			c.dispatch(m)
		}
	}()
	fail := func(err error) (bool, error) {
		cancel()
		r := <-done
		if errors.Is(err, io.EOF) || err == nil {
			err = r.err
		}
		return r.heard, err
	}

	if err := c.heartbeat(stream); err != nil {
		return fail(err)
	}
	tick := time.NewTicker(c.cfg.Heartbeat)
	defer tick.Stop()
	for {
		changed := c.out.wait()
		for {
			b, pos, ok, err := c.out.next()
			if err != nil {
				c.log.Error("outbox", "err", err)
				return fail(err)
			}
			if !ok {
				break
			}
			if err := stream.SendMsg(encoded(b)); err != nil {
				return fail(err)
			}
			c.out.sent(pos)
			select { // a long backlog does not hold heartbeats back
			case <-tick.C:
				if err := c.heartbeat(stream); err != nil {
					return fail(err)
				}
			default:
			}
		}
		select {
		case <-changed:
		case <-c.beat:
			if err := c.heartbeat(stream); err != nil {
				return fail(err)
			}
		case <-tick.C:
			if err := c.heartbeat(stream); err != nil {
				return fail(err)
			}
		case r := <-done:
			return r.heard, r.err
		case <-ctx.Done():
			// Say goodbye: the server reads what was sent, then ends the
			// stream.
			stream.CloseSend()
			select {
			case r := <-done:
				return r.heard, ctx.Err()
			case <-time.After(closeWait):
				return fail(ctx.Err())
			}
		}
	}
}

// recvErr returns the stream's status after a failed Send, which only
// says io.EOF.
func recvErr(stream grpc.BidiStreamingClient[agentrpc.AgentMessage, agentrpc.ServerMessage], err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// dispatch acts on a message of the server.
func (c *conn) dispatch(m *agentrpc.ServerMessage) {
	switch m := m.Msg.(type) {
	case *agentrpc.ServerMessage_Run:
		c.ctl.run(m.Run)
	case *agentrpc.ServerMessage_Cancel:
		c.ctl.cancel(m.Cancel)
	case *agentrpc.ServerMessage_Ack:
		c.out.ack(m.Ack.UpTo)
	case *agentrpc.ServerMessage_KeepAlive:
	case *agentrpc.ServerMessage_Drain:
		c.log.Info("draining: the server asked the agent to take no more jobs")
		c.ctl.drain(false)
	default:
		c.log.Warn("unknown message from the server", "type", fmt.Sprintf("%T", m))
	}
}

// heartbeat sends the machine's state and the jobs the agent holds.
func (c *conn) heartbeat(stream grpc.BidiStreamingClient[agentrpc.AgentMessage, agentrpc.ServerMessage]) error {
	used, total := memory()
	hb := &agentrpc.Heartbeat{
		CpuPercent: c.stats.cpuPercent(), MemoryUsedBytes: used, MemoryTotalBytes: total,
		DiskFreeBytes: diskFree(c.cfg.DataDir), Draining: c.ctl.isDraining(),
	}
	for _, l := range c.ctl.held() {
		hb.RunningJobs = append(hb.RunningJobs, l.JobId)
	}
	return stream.Send(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Heartbeat{Heartbeat: hb}})
}
