package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/proc/proctest"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/registry"
)

// ---------------------------------------------------------------------------
// Logs: every App logs into a logStore, so a test can assert on what was
// logged (and that no worker failed to start).

type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
	// Dups lists keys the record carries more than once: a JSON handler
	// would write them twice.
	Dups []string
}

func (r logRecord) String() string {
	keys := make([]string, 0, len(r.Attrs))
	for k := range r.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", r.Level, r.Msg)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, r.Attrs[k])
	}
	return b.String()
}

// logStore keeps every record of one App; safe for concurrent use.
type logStore struct {
	mu   sync.Mutex
	recs []logRecord
}

func (s *logStore) all() []logRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recs)
}

// find returns the records for which match holds.
func (s *logStore) find(match func(logRecord) bool) []logRecord {
	var out []logRecord
	for _, r := range s.all() {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// recHandler records every record (all levels) into its store and passes
// it on to next when next wants it (testutil.Logger: errors to stderr).
type recHandler struct {
	store  *logStore
	next   slog.Handler
	attrs  []slog.Attr
	prefix string // group prefix for attributes added later
}

func newRecordingLogger() (*slog.Logger, *logStore) {
	s := &logStore{}
	return slog.New(&recHandler{store: s, next: testutil.Logger().Handler()}), s
}

// newQuietRecordingLogger records without printing, for tests that expect
// errors.
func newQuietRecordingLogger() (*slog.Logger, *logStore) {
	s := &logStore{}
	return slog.New(&recHandler{store: s, next: slog.DiscardHandler}), s
}

func (h *recHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recHandler) Handle(ctx context.Context, r slog.Record) error {
	rec := logRecord{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.Dups = flatten(rec.Attrs, "", a, rec.Dups)
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Dups = flatten(rec.Attrs, h.prefix, a, rec.Dups)
		return true
	})
	h.store.mu.Lock()
	h.store.recs = append(h.store.recs, rec)
	h.store.mu.Unlock()
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

// flatten adds a to into and returns dups with the keys already there.
func flatten(into map[string]string, prefix string, a slog.Attr, dups []string) []string {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, g := range v.Group() {
			dups = flatten(into, p, g, dups)
		}
		return dups
	}
	if _, seen := into[prefix+a.Key]; seen {
		dups = append(dups, prefix+a.Key)
	}
	into[prefix+a.Key] = v.String()
	return dups
}

func (h *recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		c.attrs = append(c.attrs, slog.Attr{Key: h.prefix + a.Key, Value: a.Value})
	}
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *recHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	c.next = h.next.WithGroup(name)
	return &c
}

// startFailureMarkers are what a worker that failed (or died) while
// starting leaves in the log: grpcworker's "worker failed to start", the
// starter's "… failed to start too many times", and the causes a startup
// error carries. The original Snakepit's "exited during startup" is listed
// too, for any future wording that brings it back.
var startFailureMarkers = []string{"worker failed to start", "exited during startup", "before its handshake"}

// assertNoStartFailures fails t if any record says a worker failed to start
// or died during startup (guarantee 10: green runs hide no start failures).
func assertNoStartFailures(t testing.TB, logs *logStore) {
	t.Helper()
	bad := logs.find(func(r logRecord) bool {
		for _, m := range startFailureMarkers {
			if strings.Contains(r.Msg, m) {
				return true
			}
			for _, v := range r.Attrs {
				if strings.Contains(v, m) {
					return true
				}
			}
		}
		return false
	})
	for _, r := range bad {
		t.Errorf("worker start failure logged: %s", r)
	}
}

// assertNoDuplicateKeys fails t for a record that carries a key twice
// (run_id and worker_id are attached once, where they become known).
func assertNoDuplicateKeys(t testing.TB, logs *logStore) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range logs.find(func(r logRecord) bool { return len(r.Dups) > 0 }) {
		if !seen[r.Msg] {
			seen[r.Msg] = true
			t.Errorf("log record with duplicate keys %v: %s", r.Dups, r)
		}
	}
}

// ---------------------------------------------------------------------------
// Apps

// instance is an App under test with its registry path and its log.
type instance struct {
	*snakepit.App
	path string
	logs *logStore

	stopOnce sync.Once
	report   snakepit.StopReport
	stopErr  error
}

// newInstance builds an App with its own registry (in t.TempDir unless
// cfg.RegistryPath is set) and a recording logger. It registers, in this
// order of execution at the end of the test: stop (if the test did not),
// a kill of anything still carrying the run id (reported as an error), and
// the start-failure check of the log.
func newInstance(t *testing.T, cfg snakepit.Config) *instance {
	t.Helper()
	return newInstanceLogging(t, cfg, newRecordingLogger)
}

// newInstanceLogging is newInstance with a choice of recording logger
// (newQuietRecordingLogger for tests that expect errors).
func newInstanceLogging(t *testing.T, cfg snakepit.Config, logger func() (*slog.Logger, *logStore)) *instance {
	t.Helper()
	if cfg.RegistryPath == "" {
		cfg.RegistryPath = filepath.Join(t.TempDir(), "registry.db")
	}
	log, logs := logger()
	cfg.Logger = log
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatalf("snakepit.New: %v", err)
	}
	in := &instance{App: app, path: cfg.RegistryPath, logs: logs}
	t.Cleanup(func() { assertNoStartFailures(t, logs); assertNoDuplicateKeys(t, logs) })
	t.Cleanup(func() { testutil.KillRunSurvivors(t, app.RunID()) })
	return in
}

// startInstance is newInstance plus Start (bounded by 60 s); the test's
// cleanup stops it if the test did not.
func startInstance(t *testing.T, cfg snakepit.Config) *instance {
	t.Helper()
	return startInstanceLogging(t, cfg, newRecordingLogger)
}

func startInstanceLogging(t *testing.T, cfg snakepit.Config, logger func() (*slog.Logger, *logStore)) *instance {
	t.Helper()
	in := newInstanceLogging(t, cfg, logger)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := in.Start(ctx); err != nil {
		t.Fatalf("Start (registry %s): %v", in.path, err)
	}
	t.Cleanup(func() { in.stop(t) })
	workers := cfg.Workers
	if workers == 0 {
		workers = 4
	}
	if st := in.Stats().Pool.Workers; st.Idle+st.Busy != workers {
		t.Fatalf("Start returned with %d of %d workers ready: %+v", st.Idle+st.Busy, workers, st)
	}
	return in
}

// stop performs the ordered stop once and asserts what every correct stop
// guarantees: no error, the cleanup found nothing, and — right after Stop
// returned, without polling — no process carries the run id.
func (in *instance) stop(t testing.TB) snakepit.StopReport {
	t.Helper()
	in.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		in.report, in.stopErr = in.Stop(ctx)
		left, err := proc.FindByRunID(in.RunID())
		if err != nil {
			t.Fatalf("scan /proc: %v", err)
		}
		if in.stopErr != nil {
			t.Errorf("Stop of run %s: %v", in.RunID(), in.stopErr)
		}
		if n := len(in.report.Cleanup.Found); n > 0 {
			t.Errorf("the cleanup sweep found %d survivors of run %s after the ordered stop: %+v", n, in.RunID(), in.report.Cleanup.Found)
		}
		for _, e := range in.report.Cleanup.Errors {
			t.Errorf("cleanup sweep problem: %s", e)
		}
		for _, p := range left {
			t.Errorf("process of run %s alive right after Stop returned: pid %d ppid %d: %s", in.RunID(), p.PID, p.PPID, p.Cmdline)
		}
	})
	return in.report
}

// ---------------------------------------------------------------------------
// Processes

// pidStart names one process for the lifetime of the machine.
type pidStart struct {
	PID   int
	Start uint64
}

// alive reports whether that very process is alive (a recycled pid is not).
func (p pidStart) alive() bool { return proctest.Alive(p.PID, p.Start) }

func identify(t testing.TB, pid int) pidStart {
	t.Helper()
	st, err := proc.ReadStat(pid)
	if err != nil {
		t.Fatalf("stat of pid %d: %v", pid, err)
	}
	return pidStart{pid, st.StartTime}
}

// isWorker tells a Python worker process from its descendants.
func isWorker(p proc.Process) bool {
	return strings.Contains(p.Cmdline, " snakepit_bridge.server --adapter ")
}

// workerProcs lists the live worker processes of runID (not descendants).
func workerProcs(t testing.TB, runID string) []proc.Process {
	t.Helper()
	var out []proc.Process
	for _, p := range testutil.RunIDProcesses(t, runID) {
		if isWorker(p) {
			out = append(out, p)
		}
	}
	return out
}

func pidSet(ps []proc.Process) map[pidStart]bool {
	m := map[pidStart]bool{}
	for _, p := range ps {
		m[pidStart{p.PID, p.StartTime}] = true
	}
	return m
}

// The lifecycle adapter (testdata/py) is the showcase adapter plus
// spawn_session_child, a grandchild that leaves the worker's process group.
const (
	lifecycleAdapter = "lifecycle_adapter.LifecycleAdapter"
	// Tools that start a grandchild sleeping `seconds` and return its pid.
	inGroup  = "spawn_child"         // stays in the worker's process group
	ownGroup = "spawn_session_child" // setsid: leaves the group and session
)

// lifecycleAdapterPath is the absolute PythonPath entry for testdata/py.
func lifecycleAdapterPath(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "py"))
	must(t, err)
	return p
}

// withLifecycleAdapter makes cfg use the lifecycle adapter.
func withLifecycleAdapter(t testing.TB, cfg snakepit.Config) snakepit.Config {
	cfg.Adapter = lifecycleAdapter
	cfg.PythonPath = append(cfg.PythonPath, lifecycleAdapterPath(t))
	return cfg
}

// grandchild is a process a worker started through a spawn tool.
type grandchild struct {
	pidStart
	Parent int // the worker that started it
	PGID   int
}

// spawnGrandchildren makes n concurrent calls of tool (inGroup or
// ownGroup; each child sleeps 300 s) and returns the children, verified to
// carry the run id.
func spawnGrandchildren(t testing.TB, in *instance, n int, tool string) []grandchild {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var out []grandchild
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			res, err := snakepit.Decode[map[string]int](in.Execute(ctx, tool, map[string]any{"seconds": 300}))
			if err != nil {
				t.Errorf("%s: %v", tool, err)
				return
			}
			st, err := proc.ReadStat(res["pid"])
			if err != nil || st.Zombie() {
				t.Errorf("grandchild %d is not alive after %s returned: %v", res["pid"], tool, err)
				return
			}
			mu.Lock()
			out = append(out, grandchild{pidStart{st.PID, st.StartTime}, st.PPID, st.PGID})
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, g := range out {
		// Popen returns once exec has begun (its close-on-exec pipe closed),
		// but the kernel publishes the new argv/environ a moment later; until
		// then /proc/PID/environ reads empty. Poll, don't sample once.
		waitFor(t, 2*time.Second, fmt.Sprintf("grandchild %d to carry run id %s", g.PID, in.RunID()), func() bool {
			return proc.CarriesRunID(g.PID, in.RunID())
		})
		if left := g.PGID != g.Parent; left != (tool == ownGroup) {
			t.Fatalf("%s: grandchild %d has pgid %d, its worker %d", tool, g.PID, g.PGID, g.Parent)
		}
	}
	return out
}

// startLeftover starts a proctest process tree (a /bin/sh leader in its own
// process group waiting on sleep children); it carries the suite id, and the
// test's cleanup kills and reaps it.
func startLeftover(t *testing.T, s proctest.Spec) *proctest.Child {
	t.Helper()
	s.Env = append(s.Env, testutil.SuiteEnv+"="+os.Getenv(testutil.SuiteEnv))
	return proctest.Start(t, s)
}

// ---------------------------------------------------------------------------
// Registry files

// plantDeadRun records workers under runID the way a host that then died
// would have: Open, fill, Close (which keeps the run, since records are
// left). The test process plays the dead host; the file is unlocked after.
func plantDeadRun(t testing.TB, path, runID string, fill func(r *registry.Registry)) {
	t.Helper()
	log, _ := newRecordingLogger()
	r, err := registry.Open(registry.Options{Path: path, RunID: runID, Logger: log})
	if err != nil {
		t.Fatalf("registry.Open(%s): %v", path, err)
	}
	fill(r)
	if err := r.Close(); err != nil {
		t.Fatalf("registry close: %v", err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// registryContents opens the (unlocked) registry at path under a fresh run
// id, without reaping, and returns the runs and worker records of every
// other run.
func registryContents(t testing.TB, path string) ([]registry.Run, []registry.Record) {
	t.Helper()
	log, _ := newRecordingLogger()
	r, err := registry.Open(registry.Options{Path: path, Logger: log})
	if err != nil {
		t.Fatalf("registry.Open(%s): %v", path, err)
	}
	defer func() { must(t, r.Close()) }()
	runs, err := r.Runs()
	must(t, err)
	recs, err := r.Records()
	must(t, err)
	runs = slices.DeleteFunc(runs, func(run registry.Run) bool { return run.RunID == r.RunID() })
	return runs, recs
}

// peekRecords reads the worker records of a registry that a live App holds
// locked. The registry offers no read path to another process while it is
// locked (bbolt's shared lock conflicts with the holder's exclusive one), so
// this reads a copy of the file, as registry's own lockedError does. A copy
// torn by a concurrent write fails to open; callers poll.
func peekRecords(t testing.TB, path string) ([]registry.Record, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cp := filepath.Join(t.TempDir(), "peek.db")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		return nil, err
	}
	db, err := bolt.Open(cp, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var out []registry.Record
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("workers"))
		if b == nil {
			return fmt.Errorf("no workers bucket in %s", cp)
		}
		return b.ForEach(func(k, v []byte) error {
			var r registry.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// patchRecord rewrites one worker record of an unlocked registry file in
// place: the registry API cannot write a record whose start time is wrong,
// which is exactly what a recycled pid looks like.
func patchRecord(t testing.TB, path, runID, workerID string, fn func(*registry.Record)) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	must(t, err)
	defer db.Close()
	key := []byte(runID + "/" + workerID)
	must(t, db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("workers"))
		v := b.Get(key)
		if v == nil {
			return fmt.Errorf("no record %s", key)
		}
		var r registry.Record
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		fn(&r)
		nv, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put(key, nv)
	}))
}

// ---------------------------------------------------------------------------
// Helper binaries, built once per test binary into the suite's state
// directory (which testutil.Main removes at the end).

var (
	buildMu  sync.Mutex
	builtBin = map[string]string{}
)

// buildBinary go-builds pkg (a path relative to this package's directory)
// once and returns the executable's path.
func buildBinary(t testing.TB, name, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := builtBin[name]; ok {
		return p
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, serr := os.Stat(goBin); serr != nil {
			t.Fatalf("no go command to build %s: %v", pkg, err)
		}
	}
	dir := filepath.Join(os.Getenv("SNAKEPIT_STATE_DIR"), "bin")
	if os.Getenv("SNAKEPIT_STATE_DIR") == "" {
		t.Fatal("SNAKEPIT_STATE_DIR is not set: TestMain must be testutil.Main")
	}
	must(t, os.MkdirAll(dir, 0o700))
	out := filepath.Join(dir, name)
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	builtBin[name] = out
	return out
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, msg, cond)
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
