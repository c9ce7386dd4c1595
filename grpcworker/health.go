package grpcworker

import (
	"context"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
)

func (w *Worker) healthTicker() *time.Ticker {
	if w.f.opts.HealthInterval <= 0 {
		return nil
	}
	return time.NewTicker(w.f.opts.HealthInterval)
}

func tickC(t *time.Ticker) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// healthCheck pings lt; false once HealthMisses pings in a row have failed.
// A lifetime whose cancelled calls keep running past HungGrace is asked to
// be recycled.
func (w *Worker) healthCheck(ctx context.Context, lt *lifetime, misses *int) bool {
	o := &w.f.opts
	pctx, cancel := context.WithTimeout(ctx, o.HealthTimeout)
	resp, err := lt.client.Ping(pctx, &pb.PingRequest{Message: "health"})
	cancel()
	if err == nil || ctx.Err() != nil {
		*misses = 0
		w.checkAbandoned(lt, resp)
		return true
	}
	*misses++
	w.log.Warn("worker health check failed", "pid", lt.p.PID(), "misses", *misses, "of", o.HealthMisses, "err", err)
	return *misses < o.HealthMisses
}

// checkAbandoned asks for a recycle of lt when a cancelled call has kept
// running for HungGrace: Python cannot stop a thread, so only a new process
// gets rid of it. The abandoned call keeps its Python capacity slot until
// then (capacity is exact), so calls sent to lt meanwhile may wait for it.
func (w *Worker) checkAbandoned(lt *lifetime, resp *pb.PingResponse) {
	if resp.GetAbandonedCalls() == 0 {
		return
	}
	age := time.Duration(resp.GetOldestAbandonedSeconds() * float64(time.Second))
	if age < w.f.opts.HungGrace {
		return
	}
	w.log.Warn("a cancelled call is still running in the worker (the tool ignores cancellation); recycling the process",
		"pid", lt.p.PID(), "abandoned_calls", resp.GetAbandonedCalls(), "request_ids", resp.GetAbandonedRequestIds(), "oldest", age.Round(time.Millisecond))
	lt.requestRecycle(reasonIgnored)
}

// checkAbandonedLater looks again once a cancelled call has had HungGrace
// to finish, without holding up the caller, whose call is already over.
func (w *Worker) checkAbandonedLater(lt *lifetime) {
	o := &w.f.opts
	time.AfterFunc(o.HungGrace+abandonSlack, func() {
		lt.mu.Lock()
		over := lt.over
		lt.mu.Unlock()
		if over {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.HealthTimeout)
		defer cancel()
		if resp, err := lt.client.Ping(ctx, &pb.PingRequest{Message: "abandoned?"}); err == nil {
			w.checkAbandoned(lt, resp)
		}
	})
}

// abandonSlack covers the delay between the host's deadline and Python
// noticing the cancellation, from which Python counts the call's age.
const abandonSlack = 200 * time.Millisecond
