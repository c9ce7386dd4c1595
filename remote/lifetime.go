package remote

import (
	"sync"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/worker"
)

// lifetime is one connection to the agent.
type lifetime struct {
	cc     *grpc.ClientConn
	agent  agentpb.AgentServiceClient
	health healthpb.HealthClient
	tools  []worker.ToolSpec
	capac  int           // capacity the agent advertised
	ended  chan struct{} // closed by end or leave
	once   sync.Once
	reason string // why it ended; valid once ended is closed

	mu     sync.Mutex
	calls  int  // calls in flight on cc
	closed bool // cc is closed
}

// drainBound caps how long a connection that left rotation stays open for
// the calls still on it. The agent's own stop grace normally ends them
// sooner; keepalive fails them if the agent vanished without a word.
const drainBound = time.Minute

// end takes the lifetime out of rotation and closes the connection at once:
// calls under it fail. For a kill, a hung or unreachable agent, a stop.
func (lt *lifetime) end(reason string) {
	lt.once.Do(func() {
		lt.reason = reason
		close(lt.ended)
	})
	lt.close()
}

// leave takes the lifetime out of rotation but lets the calls already on
// the connection finish: an agent that is draining (GOAWAY, NOT_SERVING)
// answers them. The connection closes when the last one returns, or after
// drainBound. An agent that died fails those calls by itself.
func (lt *lifetime) leave(reason string) {
	first := false
	lt.once.Do(func() {
		lt.reason = reason
		close(lt.ended)
		first = true
	})
	if !first {
		return
	}
	lt.mu.Lock()
	idle := lt.calls == 0
	lt.mu.Unlock()
	if idle {
		lt.close()
		return
	}
	time.AfterFunc(drainBound, lt.close)
}

func (lt *lifetime) close() {
	lt.mu.Lock()
	done := lt.closed
	lt.closed = true
	lt.mu.Unlock()
	if !done {
		_ = lt.cc.Close()
	}
}

// enter counts a call on the connection; false once the lifetime ended.
func (lt *lifetime) enter() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.closed || lt.over() {
		return false
	}
	lt.calls++
	return true
}

// exit ends a call entered; the last one out of a lifetime that left
// rotation closes the connection.
func (lt *lifetime) exit() {
	lt.mu.Lock()
	lt.calls--
	last := lt.calls == 0 && lt.over()
	lt.mu.Unlock()
	if last {
		lt.close()
	}
}

func (lt *lifetime) over() bool {
	select {
	case <-lt.ended:
		return true
	default:
		return false
	}
}
