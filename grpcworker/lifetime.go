package grpcworker

import (
	"sync"

	"google.golang.org/grpc"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/worker"
)

// lifetime is one process incarnation after its handshake.
type lifetime struct {
	p        *childproc.Process
	target   string // the worker's gRPC address
	conn     *grpc.ClientConn
	client   pb.WorkerServiceClient
	tools    []worker.ToolSpec
	capacity int         // from the handshake; 0: Spec.Capacity
	prefetch int         // from the handshake: worker.Info.Prefetch
	quota    int         // calls after which a recycle is asked for; 0: never
	kill     chan string // Kill requests; buffered 1
	call     *conn       // what admit gives every call on this lifetime

	recycle chan string // a recycle by plan requested; buffered 1

	mu       sync.Mutex
	reason   string // why the host ended it, if it did
	inflight int
	served   int
	draining bool
	drained  chan struct{} // closed once draining with no call in flight
	over     bool          // finished: conn closed, record removed
}

// info is what the pool is told of this lifetime once it is ready.
func (lt *lifetime) info() worker.Info {
	return worker.Info{PID: lt.p.PID(), Tools: lt.tools, Capacity: lt.capacity, Prefetch: lt.prefetch}
}

// begin admits a call to this lifetime; false once it is draining (the
// caller answers ErrWorkerUnavailable: nothing was sent).
func (lt *lifetime) begin() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.draining {
		return false
	}
	lt.inflight++
	return true
}

// end finishes an admitted call. Reaching the quota asks for a recycle;
// the lifetime keeps serving until its successor is ready, so the quota is
// a point at which recycling starts, not a hard cap.
func (lt *lifetime) end() {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.inflight--
	lt.served++
	if lt.quota > 0 && lt.served == lt.quota {
		lt.requestRecycle(reasonRequests)
	}
	if lt.draining && lt.inflight == 0 {
		close(lt.drained)
	}
}

func (lt *lifetime) requestRecycle(reason string) {
	select {
	case lt.recycle <- reason:
	default:
	}
}

func (lt *lifetime) requestKill(reason string) {
	select {
	case lt.kill <- reason:
	default:
	}
}

// drain stops admitting calls; the channel closes when none is in flight.
func (lt *lifetime) drain() <-chan struct{} {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if !lt.draining {
		lt.draining = true
		if lt.inflight == 0 {
			close(lt.drained)
		}
	}
	return lt.drained
}

func (lt *lifetime) setReason(r string) {
	lt.mu.Lock()
	lt.reason = r
	lt.mu.Unlock()
}

// crashError describes the ended process; valid once p.exited is closed.
func (lt *lifetime) crashError(id string) *worker.CrashError {
	lt.mu.Lock()
	reason := lt.reason
	lt.mu.Unlock()
	code, sig := lt.p.ExitStatus()
	return &worker.CrashError{WorkerID: id, PID: lt.p.PID(), ExitCode: code, Signal: sig, Reason: reason}
}
