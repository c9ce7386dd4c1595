package discovery_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snakepit-go/snakepit/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type resolver struct {
	mu    sync.Mutex
	addrs []string
	err   error
	calls int
}

func (r *resolver) LookupHost(_ context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return nil, r.err
	}
	return slices.Clone(r.addrs), nil
}

func (r *resolver) set(err error, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs, r.err = addrs, err
}

func TestDNSEndpoints(t *testing.T) {
	r := &resolver{addrs: []string{"10.0.0.1", "fd00::2"}}
	d := discovery.DNS{Name: "agents.default.svc.cluster.local", Port: 7070, Resolver: r}
	got, err := d.Endpoints(context.Background())
	if err != nil || !slices.Equal(got, []string{"10.0.0.1:7070", "[fd00::2]:7070"}) {
		t.Fatalf("Endpoints = %v, %v", got, err)
	}
	// A headless Service with no ready pod: NXDOMAIN is an answer, not a failure.
	r.set(&net.DNSError{Err: "no such host", Name: d.Name, IsNotFound: true})
	if got, err := d.Endpoints(context.Background()); err != nil || len(got) != 0 {
		t.Fatalf("NXDOMAIN: Endpoints = %v, %v; want none, nil", got, err)
	}
	r.set(&net.DNSError{Err: "server misbehaving", Name: d.Name, IsTemporary: true})
	if _, err := d.Endpoints(context.Background()); err == nil {
		t.Fatal("a failed lookup returned no error")
	}
	if _, err := (discovery.DNS{Name: "x"}).Endpoints(context.Background()); err == nil {
		t.Fatal("a DNS source without a port was accepted")
	}
}

type members struct {
	mu     sync.Mutex
	joined map[string]bool
	events []string
}

func (m *members) join(ep string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.joined[ep] = true
	m.events = append(m.events, "+"+ep)
	return nil
}

func (m *members) leave(_ context.Context, ep string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.joined, ep)
	m.events = append(m.events, "-"+ep)
}

func (m *members) has(eps ...string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.joined) != len(eps) {
		return false
	}
	for _, e := range eps {
		if !m.joined[e] {
			return false
		}
	}
	return true
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Endpoints that appear join, those that vanish leave; a failed lookup
// keeps the members; Refresh polls at once instead of after the interval.
func TestWatcherFollowsSource(t *testing.T) {
	r := &resolver{addrs: []string{"10.0.0.1", "10.0.0.2"}}
	m := &members{joined: map[string]bool{}}
	w, err := discovery.NewWatcher(discovery.Options{
		Source:   discovery.DNS{Name: "agents", Port: 7070, Resolver: r},
		Interval: time.Hour, // only Refresh polls after the first
		Join:     m.join, Leave: m.leave,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	<-w.Ready()
	if !m.has("10.0.0.1:7070", "10.0.0.2:7070") {
		t.Fatalf("after the first poll: %v", m.events)
	}

	r.set(errors.New("resolver down"))
	n := w.Polls()
	w.Refresh()
	eventually(t, "a poll after Refresh", func() bool { return w.Polls() > n })
	if !m.has("10.0.0.1:7070", "10.0.0.2:7070") {
		t.Fatalf("a failed lookup changed the members: %v", m.events)
	}

	r.set(nil, "10.0.0.2", "10.0.0.3")
	w.Refresh()
	eventually(t, "10.0.0.1 gone and 10.0.0.3 joined", func() bool { return m.has("10.0.0.2:7070", "10.0.0.3:7070") })
	if got := w.Members(); !slices.Equal(got, []string{"10.0.0.2:7070", "10.0.0.3:7070"}) {
		t.Fatalf("Members = %v", got)
	}
}

func TestStatic(t *testing.T) {
	s := discovery.Static{"127.0.0.1:7070"}
	got, err := s.Endpoints(context.Background())
	if err != nil || !slices.Equal(got, []string{"127.0.0.1:7070"}) {
		t.Fatalf("Static = %v, %v", got, err)
	}
}
