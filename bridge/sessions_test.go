package bridge

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func newTestSessions(clock *fakeClock, max int) *Sessions {
	return newSessions(clock.Now, time.Hour, max, nil)
}

func TestSessionCreateGetDelete(t *testing.T) {
	clock := newFakeClock()
	ss := newTestSessions(clock, 10)
	start := clock.Now()

	got, err := ss.Create("s1", map[string]string{"user": "ada"}, 0)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if got.ID != "s1" || got.TTL != time.Hour || !got.CreatedAt.Equal(start) || !got.LastAccess.Equal(start) || got.Metadata["user"] != "ada" {
		t.Fatalf("Create = %+v", got)
	}

	clock.Advance(time.Minute)
	got, err = ss.Get("s1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !got.CreatedAt.Equal(start) || !got.LastAccess.Equal(start.Add(time.Minute)) {
		t.Fatalf("Get did not touch: %+v", got)
	}

	if !ss.Delete("s1") {
		t.Fatal("Delete of an existing session = false")
	}
	if ss.Delete("s1") {
		t.Fatal("second Delete = true")
	}
	if _, err := ss.Get("s1"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrSessionNotFound", err)
	}
}

func TestSessionCreateIsIdempotent(t *testing.T) {
	clock := newFakeClock()
	ss := newTestSessions(clock, 1)
	first, err := ss.Create("s", map[string]string{"a": "1"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	// Quota 1 is already used by "s": a repeat must not count as a new session.
	again, err := ss.Create("s", map[string]string{"b": "2"}, time.Hour)
	if err != nil {
		t.Fatalf("repeat Create: %v", err)
	}
	if again.TTL != time.Minute || len(again.Metadata) != 1 || again.Metadata["a"] != "1" {
		t.Fatalf("repeat Create changed the session: %+v", again)
	}
	if !again.CreatedAt.Equal(first.CreatedAt) || !again.LastAccess.Equal(first.LastAccess.Add(10*time.Second)) {
		t.Fatalf("repeat Create: times %v/%v, want created kept and access touched", again.CreatedAt, again.LastAccess)
	}
	if n := len(ss.List()); n != 1 {
		t.Fatalf("List has %d sessions, want 1", n)
	}
}

func TestSessionTTLFromLastAccess(t *testing.T) {
	clock := newFakeClock()
	ss := newTestSessions(clock, 10)
	if _, err := ss.Create("s", nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Each access restarts the TTL, so 3 × 9 s of use outlives a 10 s TTL.
	for range 3 {
		clock.Advance(9 * time.Second)
		if _, err := ss.Get("s"); err != nil {
			t.Fatalf("Get within TTL of the last access: %v", err)
		}
	}
	clock.Advance(10 * time.Second)
	_, err := ss.Get("s")
	if !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("Get after TTL: %v, want ErrSessionExpired", err)
	}
	var se *SessionError
	if !errors.As(err, &se) || se.ID != "s" || se.TTL != 10*time.Second || se.Idle != 10*time.Second {
		t.Fatalf("error %#v, want *SessionError with id, idle and TTL", err)
	}
	if !strings.Contains(err.Error(), "create it again") {
		t.Fatalf("message %q does not say what to do", err)
	}
	// An expired session is removed when found.
	if _, err := ss.Get("s"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("second Get: %v, want ErrSessionNotFound", err)
	}
}

func TestSessionExpiredIsReplacedByCreate(t *testing.T) {
	clock := newFakeClock()
	ss := newTestSessions(clock, 10)
	if _, err := ss.Create("s", map[string]string{"gen": "1"}, time.Second); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	got, err := ss.Create("s", map[string]string{"gen": "2"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata["gen"] != "2" || got.TTL != time.Minute || !got.CreatedAt.Equal(clock.Now()) {
		t.Fatalf("Create over an expired session = %+v, want a fresh one", got)
	}
}

func TestSessionSweep(t *testing.T) {
	clock := newFakeClock()
	ss := newTestSessions(clock, 10)
	for _, c := range []struct {
		id  string
		ttl time.Duration
	}{{"short", time.Second}, {"mid", time.Minute}, {"long", time.Hour}} {
		if _, err := ss.Create(c.id, nil, c.ttl); err != nil {
			t.Fatal(err)
		}
	}
	if n := ss.sweep(clock.Now()); n != 0 {
		t.Fatalf("Sweep at creation removed %d", n)
	}
	if n := ss.sweep(clock.Now().Add(2 * time.Minute)); n != 2 {
		t.Fatalf("Sweep after 2m removed %d, want 2", n)
	}
	list := ss.List()
	if len(list) != 1 || list[0].ID != "long" {
		t.Fatalf("List after Sweep = %+v, want only long", list)
	}
}

func TestSessionListSkipsExpired(t *testing.T) {
	clock := newFakeClock()
	ss := newTestSessions(clock, 10)
	_, _ = ss.Create("b", nil, time.Second)
	clock.Advance(time.Millisecond)
	_, _ = ss.Create("a", nil, time.Hour)
	clock.Advance(time.Millisecond)
	_, _ = ss.Create("c", nil, time.Hour)
	if got := ids(ss.List()); got != "b,a,c" {
		t.Fatalf("List order %s, want oldest first b,a,c", got)
	}
	clock.Advance(time.Second)
	if got := ids(ss.List()); got != "a,c" {
		t.Fatalf("List %s, want a,c (b expired)", got)
	}
}

func ids(list []Session) string {
	var out []string
	for _, s := range list {
		out = append(out, s.ID)
	}
	return strings.Join(out, ",")
}

func TestSessionQuota(t *testing.T) {
	clock := newFakeClock()
	ss := newTestSessions(clock, 2)
	for _, id := range []string{"a", "b"} {
		if _, err := ss.Create(id, nil, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	_, err := ss.Create("c", nil, 0)
	if !errors.Is(err, ErrSessionQuota) {
		t.Fatalf("Create past quota: %v, want ErrSessionQuota", err)
	}
	var se *SessionError
	if !errors.As(err, &se) || se.Limit != 2 {
		t.Fatalf("error %#v, want *SessionError with Limit 2", err)
	}
	for _, hint := range []string{"delete sessions", "MaxSessions"} {
		if !strings.Contains(err.Error(), hint) {
			t.Fatalf("message %q lacks %q", err, hint)
		}
	}

	ss.Delete("a")
	if _, err := ss.Create("c", nil, 0); err != nil {
		t.Fatalf("Create after Delete freed a slot: %v", err)
	}

	// Sessions past their TTL do not hold the quota, even before a sweep.
	clock.Advance(2 * time.Minute) // "b" expires; "c" has the 1h default
	if _, err := ss.Create("d", nil, 0); err != nil {
		t.Fatalf("Create with an expired session holding a slot: %v", err)
	}
}

func TestSessionInvalidIDs(t *testing.T) {
	ss := newTestSessions(newFakeClock(), 10)
	valid := []string{"a", "default_session", "3fa85f64-5717-4562-b3fc-2c963f66afa6", "user:42", "tenant/job.7@host", strings.Repeat("x", maxSessionIDLen)}
	for _, id := range valid {
		if _, err := ss.Create(id, nil, 0); err != nil {
			t.Errorf("Create(%q): %v", id, err)
		}
	}
	invalid := []string{"", strings.Repeat("x", maxSessionIDLen+1), "has space", "tab\t", "new\nline", "nul\x00", "é", "semi;colon", "quote\""}
	for _, id := range invalid {
		_, err := ss.Create(id, nil, 0)
		if !errors.Is(err, ErrInvalidSessionID) {
			t.Errorf("Create(%q): %v, want ErrInvalidSessionID", id, err)
			continue
		}
		if len(err.Error()) > 400 {
			t.Errorf("message for a %d-byte id is %d bytes; ids must be cut in messages", len(id), len(err.Error()))
		}
		if _, err := ss.Get(id); !errors.Is(err, ErrInvalidSessionID) {
			t.Errorf("Get(%q): %v, want ErrInvalidSessionID", id, err)
		}
	}
}

func TestSessionCopies(t *testing.T) {
	ss := newTestSessions(newFakeClock(), 10)
	meta := map[string]string{"k": "v"}
	got, err := ss.Create("s", meta, 0)
	if err != nil {
		t.Fatal(err)
	}
	meta["k"] = "changed by caller"
	got.Metadata["k"] = "changed via result"
	for _, s := range ss.List() {
		s.Metadata["k"] = "changed via List"
	}
	again, err := ss.Get("s")
	if err != nil {
		t.Fatal(err)
	}
	if again.Metadata["k"] != "v" {
		t.Fatalf("stored metadata changed to %q; the store must not share maps", again.Metadata["k"])
	}
}

func TestSessionRemovalHook(t *testing.T) {
	clock := newFakeClock()
	var removed []string
	ss := newSessions(clock.Now, time.Hour, 10, func(ids []string) { removed = append(removed, ids...) })
	_, _ = ss.Create("deleted", nil, 0)
	_, _ = ss.Create("expired", nil, time.Second)
	_, _ = ss.Create("swept", nil, 2*time.Second)
	ss.Delete("deleted")
	clock.Advance(3 * time.Second)
	_, _ = ss.Get("expired")
	ss.sweep(clock.Now())
	if got := strings.Join(removed, ","); got != "deleted,expired,swept" {
		t.Fatalf("removal hook saw %s", got)
	}
}
