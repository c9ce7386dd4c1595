package bridge

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"time"
)

// maxSessionIDLen is the longest session id accepted, in bytes.
const maxSessionIDLen = 256

// sessionIDPunct lists the punctuation allowed in session ids besides letters
// and digits: enough for UUIDs, "user:42", "tenant/job.7" and the like, while
// keeping ids safe to log, to put in metrics labels and to pass through argv.
const sessionIDPunct = "'-', '_', '.', ':', '@', '/'"

// Session is a snapshot of one session. It is a copy: changing it (or its
// Metadata) does not change the stored session.
type Session struct {
	ID         string
	Metadata   map[string]string
	CreatedAt  time.Time
	LastAccess time.Time
	// TTL is how long the session may go unused before it expires.
	TTL time.Duration
}

// Sessions is the bridge's session store. It is safe for concurrent use.
// Get it from Server.Sessions.
type Sessions struct {
	now        func() time.Time
	defaultTTL time.Duration
	max        int
	// onRemove learns which sessions went away (deleted, expired or swept) so
	// that state keyed by session elsewhere can follow. Called without mu held.
	onRemove func(ids []string)

	mu sync.Mutex
	m  map[string]*Session
}

func newSessions(now func() time.Time, defaultTTL time.Duration, max int, onRemove func([]string)) *Sessions {
	if onRemove == nil {
		onRemove = func([]string) {}
	}
	return &Sessions{now: now, defaultTTL: defaultTTL, max: max, onRemove: onRemove, m: map[string]*Session{}}
}

// Create creates the session id with a copy of meta and the given ttl (0 or
// less: the store's default, Options.SessionTTL).
//
// Create is idempotent: if id already exists and has not expired, it is
// touched and returned as it is — its metadata and TTL are kept and meta and
// ttl are ignored, so a worker retrying its InitializeSession cannot clobber
// what another call stored. A session whose TTL has passed counts as absent
// and is replaced by a new one.
//
// Errors: ErrInvalidSessionID, ErrSessionQuota (after expired sessions have
// been swept to make room), as *SessionError.
func (s *Sessions) Create(id string, meta map[string]string, ttl time.Duration) (Session, error) {
	if err := validateSessionID(id); err != nil {
		return Session{}, err
	}
	if ttl <= 0 {
		ttl = s.defaultTTL
	}
	now := s.now()

	s.mu.Lock()
	var removed []string
	if cur, ok := s.m[id]; ok {
		if !expired(cur, now) {
			cur.LastAccess = now
			snap := snapshot(cur)
			s.mu.Unlock()
			return snap, nil
		}
		delete(s.m, id)
		removed = append(removed, id)
	}
	if len(s.m) >= s.max {
		// Sessions that merely have not been swept yet must not hold the
		// quota against live callers.
		removed = append(removed, s.sweepLocked(now)...)
	}
	if len(s.m) >= s.max {
		s.mu.Unlock()
		s.notify(removed)
		return Session{}, &SessionError{ID: id, Err: ErrSessionQuota, Limit: s.max}
	}
	sess := &Session{ID: id, Metadata: maps.Clone(meta), CreatedAt: now, LastAccess: now, TTL: ttl}
	if sess.Metadata == nil {
		sess.Metadata = map[string]string{}
	}
	s.m[id] = sess
	snap := snapshot(sess)
	s.mu.Unlock()
	s.notify(removed)
	return snap, nil
}

// Get returns the session and marks it as accessed now, which restarts its
// TTL. Errors (as *SessionError): ErrInvalidSessionID, ErrSessionNotFound, and
// ErrSessionExpired when the TTL had passed — the session is then removed, so
// the next Get says ErrSessionNotFound.
func (s *Sessions) Get(id string) (Session, error) {
	if err := validateSessionID(id); err != nil {
		return Session{}, err
	}
	now := s.now()
	s.mu.Lock()
	cur, ok := s.m[id]
	if !ok {
		s.mu.Unlock()
		return Session{}, &SessionError{ID: id, Err: ErrSessionNotFound}
	}
	if expired(cur, now) {
		delete(s.m, id)
		s.mu.Unlock()
		s.notify([]string{id})
		return Session{}, &SessionError{ID: id, Err: ErrSessionExpired, Idle: now.Sub(cur.LastAccess), TTL: cur.TTL}
	}
	cur.LastAccess = now
	snap := snapshot(cur)
	s.mu.Unlock()
	return snap, nil
}

// Delete removes the session and reports whether it existed (an expired but
// not yet swept session counts as existing).
func (s *Sessions) Delete(id string) bool {
	s.mu.Lock()
	_, ok := s.m[id]
	delete(s.m, id)
	s.mu.Unlock()
	if ok {
		s.notify([]string{id})
	}
	return ok
}

// List returns a snapshot of the live sessions, oldest first. It does not
// count as access.
func (s *Sessions) List() []Session {
	now := s.now()
	s.mu.Lock()
	out := make([]Session, 0, len(s.m))
	for _, cur := range s.m {
		if !expired(cur, now) {
			out = append(out, snapshot(cur))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Session) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// sweep removes every session whose TTL had passed at now and returns how
// many it removed. The Server calls it every Options.SweepInterval.
func (s *Sessions) sweep(now time.Time) int {
	s.mu.Lock()
	removed := s.sweepLocked(now)
	s.mu.Unlock()
	s.notify(removed)
	return len(removed)
}

// touch marks a live session as accessed and ignores anything else; it is for
// calls that merely mention a session without depending on it.
func (s *Sessions) touch(id string) {
	now := s.now()
	s.mu.Lock()
	if cur, ok := s.m[id]; ok && !expired(cur, now) {
		cur.LastAccess = now
	}
	s.mu.Unlock()
}

func (s *Sessions) sweepLocked(now time.Time) []string {
	var removed []string
	for id, cur := range s.m {
		if expired(cur, now) {
			delete(s.m, id)
			removed = append(removed, id)
		}
	}
	return removed
}

func (s *Sessions) notify(ids []string) {
	if len(ids) > 0 {
		s.onRemove(ids)
	}
}

// expired measures idleness with Sub, so a clock that steps backwards makes a
// session look fresh rather than expiring it early.
func expired(s *Session, now time.Time) bool {
	return now.Sub(s.LastAccess) >= s.TTL
}

func snapshot(s *Session) Session {
	c := *s
	c.Metadata = maps.Clone(s.Metadata)
	return c
}

func validateSessionID(id string) error {
	reason := ""
	switch {
	case id == "":
		reason = "it is empty"
	case len(id) > maxSessionIDLen:
		reason = "it is too long"
	default:
		for i := 0; i < len(id); i++ {
			if !sessionIDByte(id[i]) {
				reason = "it contains a character that is not allowed"
				break
			}
		}
	}
	if reason == "" {
		return nil
	}
	return &SessionError{ID: id, Err: ErrInvalidSessionID, Reason: reason}
}

func sessionIDByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', ':', '@', '/':
		return true
	}
	return false
}
