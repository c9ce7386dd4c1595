// Package lines is an example worker type for snakepit: each worker is a
// process of any executable that speaks JSON lines on stdin/stdout, started
// through the process kit (childproc) so it gets exactly the guarantees the
// Python worker has — registry record, own process group, parent-death
// signal, run id, group kill, reap — without reimplementing any of them.
//
// The protocol, one JSON object per line:
//
//	worker → host, once, when it can take calls:  {"ready": true, "tools": ["echo", ...]}
//	host → worker:                                {"id": 7, "tool": "echo", "args": {...}}
//	worker → host:                                {"id": 7, "result": ...} or {"id": 7, "error": "..."}
//
// The worker must exit on SIGTERM and at EOF on stdin, taking what it
// started with it (see ServeProcess and the example's serve mode).
package lines

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/snakepit-go/snakepit/childproc"
	"github.com/snakepit-go/snakepit/worker"
)

// Factory builds line-protocol workers running Command.
type Factory struct {
	Command        []string      // executable and arguments
	StartupTimeout time.Duration // default 10 s
	StopGrace      time.Duration // SIGTERM → SIGKILL; default 2 s
}

// NewWorker implements worker.Factory.
func (f *Factory) NewWorker(spec worker.Spec) (worker.Worker, error) {
	if len(f.Command) == 0 {
		return nil, errors.New("lines: Factory.Command is empty")
	}
	if spec.Launcher == nil {
		return nil, errors.New("lines: worker.Spec has no Launcher; build workers through snakepit.Config.WorkerFactory")
	}
	return &Worker{spec: spec, f: f}, nil
}

// Worker is one supervised line-protocol process slot.
type Worker struct {
	spec worker.Spec
	f    *Factory

	mu  sync.Mutex
	cur *conn
}

// conn is one process lifetime after its ready line.
type conn struct {
	p      *childproc.Process
	tools  []string
	kill   chan string
	wmu    sync.Mutex // one request line at a time on stdin
	mu     sync.Mutex
	next   int
	wait   map[int]chan reply
	reason string
}

type reply struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
	Ready  bool            `json:"ready"`
	Tools  []string        `json:"tools"`
}

func (w *Worker) ID() string     { return w.spec.ID }
func (w *Worker) String() string { return "lines worker " + w.spec.ID }

// Serve implements suture.Service: one call is one process lifetime.
func (w *Worker) Serve(ctx context.Context) error {
	id := w.spec.ID
	w.spec.Events.Starting(id)
	c := &conn{kill: make(chan string, 1), wait: map[int]chan reply{}}
	ready := make(chan reply, 1)
	p, err := w.spec.Launcher.Start(exec.Command(w.f.Command[0], w.f.Command[1:]...), childproc.Options{
		Stdout: func(line string) { c.deliver(line, ready) },
	})
	if err != nil {
		serr := &worker.StartupError{WorkerID: id, Cause: err}
		w.spec.Events.Exited(id, serr)
		return serr
	}
	c.p = p
	timeout := w.f.StartupTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	grace := w.f.StopGrace
	if grace <= 0 {
		grace = 2 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ready:
		c.tools = r.Tools
	case <-p.Exited():
		code, sig := p.ExitStatus()
		serr := &worker.StartupError{WorkerID: id, PID: p.PID(), Signal: sig, Stderr: p.StderrTail(200 * time.Millisecond),
			Cause: fmt.Errorf("exited (status %d %s) before its ready line", code, sig)}
		w.spec.Events.Exited(id, serr)
		return serr
	case <-t.C:
		p.Kill()
		serr := &worker.StartupError{WorkerID: id, PID: p.PID(), Cause: fmt.Errorf("no ready line within %s", timeout)}
		w.spec.Events.Exited(id, serr)
		return serr
	case <-ctx.Done():
		p.Stop(grace)
		w.spec.Events.Exited(id, nil)
		return nil
	}
	w.set(c)
	specs := make([]worker.ToolSpec, len(c.tools))
	for i, name := range c.tools {
		specs[i] = worker.ToolSpec{Name: name}
	}
	w.spec.Events.Ready(id, worker.Info{PID: p.PID(), Tools: specs})
	var end error
	select {
	case <-ctx.Done():
		w.set(nil)
		p.Stop(grace)
	case <-p.Exited():
		w.set(nil)
		end = c.crash(id)
	case reason := <-c.kill:
		w.set(nil)
		c.mu.Lock()
		c.reason = reason
		c.mu.Unlock()
		p.Kill()
		end = c.crash(id)
	}
	c.failAll()
	w.spec.Events.Exited(id, end)
	return end
}

func (w *Worker) set(c *conn) { w.mu.Lock(); w.cur = c; w.mu.Unlock() }

func (w *Worker) current() *conn { w.mu.Lock(); defer w.mu.Unlock(); return w.cur }

// Kill implements worker.Worker.
func (w *Worker) Kill(reason string) {
	if c := w.current(); c != nil {
		select {
		case c.kill <- reason:
		default:
		}
	}
}

// Execute implements worker.Worker.
func (w *Worker) Execute(ctx context.Context, call *worker.Call) (*worker.Result, error) {
	c := w.current()
	if c == nil {
		return nil, fmt.Errorf("%w: lines worker %s is not ready", worker.ErrWorkerUnavailable, w.spec.ID)
	}
	args := call.Args
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	ch := make(chan reply, 1)
	c.mu.Lock()
	c.next++
	n := c.next
	c.wait[n] = ch
	c.mu.Unlock()
	defer func() { c.mu.Lock(); delete(c.wait, n); c.mu.Unlock() }()
	line, _ := json.Marshal(map[string]any{"id": n, "tool": call.Tool, "args": args})
	c.wmu.Lock()
	_, err := c.p.Stdin().Write(append(line, '\n'))
	c.wmu.Unlock()
	if err != nil {
		<-c.p.Exited()
		return nil, c.crash(w.spec.ID)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, c.crash(w.spec.ID)
		}
		if r.Error != "" {
			return nil, &worker.ToolError{Tool: call.Tool, WorkerID: w.spec.ID, Type: "Error", Message: r.Error}
		}
		return &worker.Result{JSON: r.Result}, nil
	case <-ctx.Done():
		// The protocol has no cancellation: the late reply is dropped.
		return nil, ctx.Err()
	}
}

// ExecuteStream implements worker.Worker; the protocol has no streams.
func (w *Worker) ExecuteStream(ctx context.Context, call *worker.Call, yield func(worker.Chunk) error) error {
	return &worker.UnknownToolError{Tool: call.Tool, Available: nil}
}

func (c *conn) deliver(line string, ready chan<- reply) {
	var r reply
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return // not a protocol line
	}
	if r.Ready {
		select {
		case ready <- r:
		default:
		}
		return
	}
	// Under the lock: failAll closes these channels under it too.
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch := c.wait[r.ID]; ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}

// failAll ends every call still waiting: the process is gone.
func (c *conn) failAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, ch := range c.wait {
		close(ch)
		delete(c.wait, n)
	}
}

func (c *conn) crash(id string) *worker.CrashError {
	code, sig := c.p.ExitStatus()
	c.mu.Lock()
	defer c.mu.Unlock()
	return &worker.CrashError{WorkerID: id, PID: c.p.PID(), ExitCode: code, Signal: sig, Reason: c.reason}
}

// ServeProcess is the worker side of the protocol, for an executable that
// embeds it (the example's own binary in "serve" mode): it reads requests
// from in and answers on out until in ends. tools maps a name to its
// implementation.
func ServeProcess(in io.Reader, out io.Writer, tools map[string]func(args json.RawMessage) (any, error)) error {
	names := make([]string, 0, len(tools))
	for n := range tools {
		names = append(names, n)
	}
	enc := json.NewEncoder(out)
	if err := enc.Encode(map[string]any{"ready": true, "tools": names}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var req struct {
			ID   int             `json:"id"`
			Tool string          `json:"tool"`
			Args json.RawMessage `json:"args"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			continue
		}
		fn, ok := tools[req.Tool]
		resp := map[string]any{"id": req.ID}
		if !ok {
			resp["error"] = "unknown tool " + req.Tool + "; available: " + strings.Join(names, ", ")
		} else if v, err := fn(req.Args); err != nil {
			resp["error"] = err.Error()
		} else {
			resp["result"] = v
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
	return sc.Err()
}
