package agent_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/agent"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/remote"
)

// freezer is a TCP proxy to an agent that can stop passing bytes while
// keeping its connections open: the host then sees an agent that is there
// but answers nothing, as a stopped or wedged one would.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	thawed *sync.Cond
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	f.thawed = sync.NewCond(&f.mu)
	t.Cleanup(func() { f.freeze(false); _ = ln.Close() })
	go f.accept()
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

func (f *freezer) freeze(on bool) {
	f.mu.Lock()
	f.frozen = on
	f.mu.Unlock()
	f.thawed.Broadcast()
}

func (f *freezer) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		go f.pipe(c, up)
		go f.pipe(up, c)
	}
}

// pipe copies src to dst, holding each read while frozen; either side
// closing closes both.
func (f *freezer) pipe(src, dst net.Conn) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		for f.frozen {
			f.thawed.Wait()
		}
		f.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A call on an agent that stops answering (frozen: there but silent) comes
// back past its deadline as the host pool's *WorkerTimeoutError, the same
// shape as from a hung local worker: the remote worker keeps the call
// until the agent answers a health check, which it cannot, so the host
// pool's watchdog kills the worker after HungGrace. Health checks are off,
// so nothing else could have ended the connection.
func TestFrozenAgentIsAWorkerTimeoutError(t *testing.T) {
	tok := tokenFile(t)
	srv := serve(t, agentApp(t, 1, tools()), agent.Options{TokenFile: tok})
	fr := newFreezer(t, srv.Addr())
	const grace = 300 * time.Millisecond
	host, err := snakepit.New(snakepit.Config{Discovery: discovery.Static{fr.addr()}, DiscoveryInterval: 200 * time.Millisecond,
		HungGrace: grace, Remote: remote.Options{TokenFile: tok, HealthInterval: -1}, RegistryPath: t.TempDir() + "/host.db", Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := host.Start(sctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = host.Stop(context.Background()) })
	testutil.Eventually(t, 5*time.Second, "the remote worker ready", func() bool { return readyWorkers(host) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := host.Execute(ctx, "hang", nil)
		res <- err
	}()
	testutil.Eventually(t, 5*time.Second, "call in flight", func() bool { return host.Stats().Pool.InFlight == 1 })
	fr.freeze(true)
	var wte *snakepit.WorkerTimeoutError
	select {
	case err := <-res:
		if !errors.As(err, &wte) || !errors.Is(err, snakepit.ErrWorkerTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call on a frozen agent = %v; want *WorkerTimeoutError (ErrWorkerTimeout, DeadlineExceeded)", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the call on a frozen agent never returned")
	}
	if wte.WorkerID != remote.WorkerID(fr.addr()) || wte.Grace != grace || wte.Agent != "" || !errors.Is(wte.WorkerErr, snakepit.ErrWorkerCrashed) {
		t.Fatalf("WorkerTimeoutError = %+v; want the remote worker, %s, the closed connection's crash", wte, grace)
	}
	fr.freeze(false)
	testutil.Eventually(t, 10*time.Second, "the remote worker back once the agent answers", func() bool {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		defer ccancel()
		_, err := host.Execute(cctx, "echo", nil)
		return err == nil
	})
}
