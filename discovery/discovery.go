// Package discovery lists the agent endpoints a pool should have remote
// workers for, and keeps the pool's membership in line with that list.
//
// A Source answers "which endpoints exist now": Static (a fixed list) or
// DNS (the A/AAAA records of a Kubernetes headless Service, which lists the
// ready pods). A Watcher polls a Source every Interval — and at once when
// Refresh is called, which the App does whenever a remote worker's
// lifetime fails — and calls Join for each endpoint that appeared and
// Leave for each that vanished.
//
// Sharp edges:
//   - A failed lookup changes nothing: the workers already joined stay
//     (their own health checks take a dead agent out of rotation), so a DNS
//     outage cannot empty the pool. A name that does not exist (NXDOMAIN,
//     which is what a headless Service with no ready pod returns) is an
//     answer: no endpoints.
//   - Endpoints are compared as strings ("10.0.0.7:7070"): the same agent
//     under two spellings is two workers.
//   - Leave drains, so it may take up to the drain grace; the Watcher runs
//     Leaves concurrently and does not wait for one to finish before the
//     next poll, but never joins an endpoint while it is still leaving.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// DefaultInterval is how often a Watcher polls when Options.Interval is 0.
const DefaultInterval = 10 * time.Second

// minRefreshGap bounds how often Refresh may trigger a poll, so a storm of
// failing workers cannot turn into a storm of lookups.
const minRefreshGap = 100 * time.Millisecond

// Source lists agent endpoints (HOST:PORT).
type Source interface {
	Endpoints(ctx context.Context) ([]string, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context) ([]string, error)

// Endpoints calls f.
func (f SourceFunc) Endpoints(ctx context.Context) ([]string, error) { return f(ctx) }

// Static is a fixed list of endpoints.
type Static []string

// Endpoints returns the list.
func (s Static) Endpoints(context.Context) ([]string, error) { return slices.Clone(s), nil }

func (s Static) String() string { return fmt.Sprintf("static%v", []string(s)) }

// Resolver is what DNS needs of a resolver; *net.Resolver has it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// DNS lists HOST:PORT for every address Name resolves to: point it at a
// headless Service (clusterIP: None), whose name resolves to the ready
// pods' addresses, e.g. "snakepit-agent.default.svc.cluster.local".
type DNS struct {
	Name     string
	Port     int
	Resolver Resolver // nil: net.DefaultResolver
}

// Endpoints resolves Name.
func (d DNS) Endpoints(ctx context.Context) ([]string, error) {
	if d.Name == "" || d.Port <= 0 || d.Port > 65535 {
		return nil, fmt.Errorf("snakepit: DNS discovery needs a Name and a Port (got %q, %d)", d.Name, d.Port)
	}
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupHost(ctx, d.Name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("snakepit: resolving %s: %w", d.Name, err)
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, net.JoinHostPort(a, strconv.Itoa(d.Port)))
	}
	return out, nil
}

func (d DNS) String() string { return fmt.Sprintf("dns:%s:%d", d.Name, d.Port) }

// Options configure a Watcher.
type Options struct {
	Source   Source
	Interval time.Duration // default DefaultInterval
	// Join adds a worker for endpoint; an error is logged and retried at
	// the next poll.
	Join func(endpoint string) error
	// Leave removes the worker of endpoint, draining it first; ctx ends
	// when the Watcher stops (the pool's own stop drains what is left).
	Leave  func(ctx context.Context, endpoint string)
	Logger *slog.Logger
}

// Watcher keeps membership in line with a Source. It is a suture.Service
// with Ready: closed after the first poll, whatever it found.
type Watcher struct {
	opts    Options
	log     *slog.Logger
	refresh chan struct{}
	ready   chan struct{}

	mu      sync.Mutex
	members map[string]bool // joined and not leaving
	leaving map[string]bool
	polls   int
	wg      sync.WaitGroup
}

// NewWatcher checks opts; nothing runs until Serve.
func NewWatcher(opts Options) (*Watcher, error) {
	if opts.Source == nil || opts.Join == nil || opts.Leave == nil {
		return nil, errors.New("snakepit: a discovery Watcher needs a Source, Join and Leave")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Watcher{opts: opts, log: opts.Logger, refresh: make(chan struct{}, 1), ready: make(chan struct{}),
		members: map[string]bool{}, leaving: map[string]bool{}}, nil
}

func (w *Watcher) String() string { return "discovery" }

// Ready is closed once the first poll has been applied.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Refresh asks for a poll now (it never blocks; polls coalesce).
func (w *Watcher) Refresh() {
	select {
	case w.refresh <- struct{}{}:
	default:
	}
}

// Members lists the endpoints joined and not leaving, sorted.
func (w *Watcher) Members() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.members))
	for e := range w.members {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// Polls counts the polls applied so far (failed lookups included).
func (w *Watcher) Polls() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.polls
}

// Serve polls until ctx ends, then waits for the Leaves it started. The
// members joined stay: removing them is the pool's stop.
func (w *Watcher) Serve(ctx context.Context) error {
	defer w.wg.Wait()
	t := time.NewTimer(0)
	defer t.Stop()
	first := true
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-w.refresh:
			if gap := time.Since(last); gap < minRefreshGap {
				// Coalesce: the timer polls a moment later.
				t.Reset(minRefreshGap - gap)
				continue
			}
		}
		last = time.Now()
		w.poll(ctx)
		if first {
			first = false
			close(w.ready)
		}
		t.Reset(w.opts.Interval)
	}
}

func (w *Watcher) poll(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, min(w.opts.Interval, 10*time.Second))
	eps, err := w.opts.Source.Endpoints(lctx)
	cancel()
	w.mu.Lock()
	w.polls++
	w.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("discovery lookup failed; keeping the current members", "source", fmt.Sprint(w.opts.Source), "err", err)
		}
		return
	}
	want := map[string]bool{}
	for _, e := range eps {
		want[e] = true
	}
	w.mu.Lock()
	var join, leave []string
	for e := range want {
		if !w.members[e] && !w.leaving[e] {
			join = append(join, e)
		}
	}
	for e := range w.members {
		if !want[e] {
			leave = append(leave, e)
			delete(w.members, e)
			w.leaving[e] = true
		}
	}
	w.mu.Unlock()
	slices.Sort(join)
	for _, e := range join {
		if err := w.opts.Join(e); err != nil {
			w.log.Warn("discovery could not add a worker; retrying at the next poll", "endpoint", e, "err", err)
			continue
		}
		w.log.Info("discovery: endpoint joined", "endpoint", e)
		w.mu.Lock()
		w.members[e] = true
		w.mu.Unlock()
	}
	for _, e := range leave {
		w.log.Info("discovery: endpoint vanished; draining its worker", "endpoint", e)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.opts.Leave(ctx, e)
			w.mu.Lock()
			delete(w.leaving, e)
			w.mu.Unlock()
		}()
	}
}
