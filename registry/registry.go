package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit/internal/cgroup"
	"github.com/snakepit-go/snakepit/internal/proc"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Options configure Open. The zero value opens the "default" instance.
type Options struct {
	// Path of the bbolt file; default DefaultPath(Instance).
	Path string
	// Instance names the registry when Path is empty; default "default".
	// Instances let several applications share a machine without sharing a
	// lock.
	Instance string
	// RunID of this run; default NewRunID(). Must be fresh: the reaper never
	// touches the current run, so reusing a dead run's id adopts its records.
	RunID string
	// Logger; default slog.Default(). It should carry the run's
	// attributes (the App's carries run_id): records do not repeat them.
	Logger *slog.Logger
	// LockTimeout bounds the wait for the file lock; default 1s.
	LockTimeout time.Duration
	// KillGrace is the time orphans get between SIGTERM and SIGKILL;
	// default 2s. It also bounds the wait for a cgroup to empty after
	// cgroup.kill.
	KillGrace time.Duration
	// Containment is the cgroup policy the Service applies after reaping
	// (Registry.Contain): ContainAuto, ContainOff or ContainRequired;
	// empty means $SNAKEPIT_CGROUP, else ContainAuto.
	Containment string
	// Pools are the App's pools, each with its own cgroup under the run's
	// (its workers' cgroups lie in it) and the limits on it. A pool's limit
	// makes containment required (ErrContainment naming the pool when its
	// controller is not delegated).
	Pools []PoolLimits
}

// PoolLimits bound one pool's cgroup: its worker processes and everything
// they start, together (0: no limit).
type PoolLimits struct {
	Name string
	// MemoryMax is memory.max in bytes; CPUMax is cpu.max in CPUs (0.5:
	// half a core).
	MemoryMax int64
	CPUMax    float64
}

func (o Options) withDefaults() (Options, error) {
	if o.Instance == "" {
		o.Instance = "default"
	}
	if err := ValidInstance(o.Instance); err != nil {
		return o, err
	}
	if o.Path == "" {
		p, err := defaultPath(o.Instance)
		if err != nil {
			return o, err
		}
		o.Path = p
	}
	if o.RunID == "" {
		o.RunID = NewRunID()
	}
	if err := validRunID(o.RunID); err != nil {
		return o, err
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = time.Second
	}
	if o.KillGrace <= 0 {
		o.KillGrace = 2 * time.Second
	}
	return o, nil
}

var (
	// ErrLocked: another live process holds the registry file. See
	// *LockedError.
	ErrLocked = errors.New("registry is locked by another instance")
	// ErrUnavailable is matched (errors.Is) by every failure to open or use
	// the registry other than ErrLocked and an invalid name: a directory or
	// file that cannot be created or read, a foreign bbolt file
	// (ErrNotRegistry), a corrupt file that cannot be moved aside, a closed
	// registry. Workers cannot be recorded, so none is started.
	ErrUnavailable = errors.New("registry unavailable")
	// errClosed: the Registry was closed.
	errClosed = fmt.Errorf("%w: it is closed", ErrUnavailable)
	// ErrNotRegistry: the file is a valid bbolt database but not a snakepit
	// registry (or one of a newer, unknown schema). It is left untouched.
	ErrNotRegistry = fmt.Errorf("%w: the file is not a snakepit registry", ErrUnavailable)
	// errNotReserved: Activate was called for a worker without a reserved
	// record.
	errNotReserved = errors.New("worker has no reserved record")
	// errStillActive: Reserve or Activate would overwrite the record of a
	// worker process that is still alive.
	errStillActive = errors.New("worker record points to a live process")
)

// LockedError is returned by Open when the file lock could not be taken
// within Options.LockTimeout.
type LockedError struct {
	Path string
	// HolderPID is the host pid of the newest run in the file whose host is
	// still alive (same boot, same start time); 0 when unknown.
	HolderPID   int
	HolderRunID string
}

func (e *LockedError) Error() string {
	holder := "another process"
	if e.HolderPID > 0 {
		holder = fmt.Sprintf("another snakepit instance (pid %d, run %s)", e.HolderPID, e.HolderRunID)
	}
	return fmt.Sprintf("registry %s is locked by %s: another instance is running with this registry; stop it, or give this one its own Instance or RegistryPath", e.Path, holder)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

var (
	bucketMeta    = []byte("meta")
	bucketRuns    = []byte("runs")
	bucketWorkers = []byte("workers")
	keySchema     = []byte("schema")
	schemaV1      = []byte("snakepit-registry/1")
)

// Registry is an open registry file. Its methods are safe for concurrent use.
type Registry struct {
	db     *bolt.DB
	path   string
	runID  string
	log    *slog.Logger
	grace  time.Duration
	host   Run // this run's entry
	closed atomic.Bool
	cg     atomic.Pointer[cgroup.Run] // set by Contain
	wd     *cgroup.Watchdog           // set by Contain before cg; nil without
	mode   atomic.Value               // string: Containment()
}

// Open opens (creating if needed) the registry file and records this run.
// It does not reap; call ReapOrphans before spawning workers. Its errors
// match ErrLocked, ErrInvalidName or ErrUnavailable.
func Open(opts Options) (*Registry, error) {
	r, err := openRegistry(opts)
	if err != nil && !errors.Is(err, ErrLocked) && !errors.Is(err, ErrInvalidName) && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return r, err
}

func openRegistry(opts Options) (*Registry, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("component", "registry", "path", opts.Path)
	boot, err := proc.BootID()
	if err != nil {
		return nil, err
	}
	hostStart, err := proc.StartTime(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("registry: own start time: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
		return nil, fmt.Errorf("registry: create directory for %s: %w (set Options.Path or SNAKEPIT_STATE_DIR to a writable place)", opts.Path, err)
	}

	var db *bolt.DB
	for attempt := 1; ; attempt++ {
		db, err = openDB(opts.Path, opts.LockTimeout)
		if err == nil {
			if err = prepare(db); err != nil {
				_ = db.Close()
			}
		}
		if err == nil {
			break
		}
		var ce *corruptError
		if !errors.As(err, &ce) || attempt == 3 {
			if errors.Is(err, berrors.ErrTimeout) {
				return nil, lockedError(opts.Path)
			}
			return nil, err
		}
		moved, qerr := quarantine(opts.Path, opts.LockTimeout)
		if qerr != nil {
			return nil, qerr
		}
		if moved != "" {
			log.Warn("registry file is corrupt; moved it aside and started a fresh one (workers recorded only in the old file will not be reaped by this registry)",
				"cause", ce.cause, "moved_to", moved)
		}
	}
	// Batch's default 10ms wait would add that much to every spawn whose
	// Reserve/Activate does not overlap another one; concurrent writers
	// still coalesce within 1ms, and the fsync dominates anyway.
	db.MaxBatchDelay = time.Millisecond
	if fi, err := os.Stat(opts.Path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// Records name processes and run ids; keep them private even if the
		// file was created by hand or with a wide umask.
		if err := os.Chmod(opts.Path, 0o600); err != nil {
			log.Warn("cannot restrict registry file to 0600", "err", err)
		}
	}

	r := &Registry{
		db: db, path: opts.Path, runID: opts.RunID, log: log, grace: opts.KillGrace,
		host: Run{
			RunID: opts.RunID, Instance: opts.Instance, HostPID: os.Getpid(),
			HostStartTime: hostStart, BootID: boot, StartedAt: time.Now().UTC(),
		},
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := createBuckets(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketRuns).Put([]byte(r.runID), encode(r.host))
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("registry %s: record run: %w", opts.Path, err)
	}
	return r, nil
}

// corruptError marks an open failure that means the file content is damaged.
type corruptError struct{ cause error }

func (e *corruptError) Error() string { return "registry file is corrupt: " + e.cause.Error() }
func (e *corruptError) Unwrap() error { return e.cause }

// openDB opens the bbolt file. Every failure is *corruptError — the file's
// content is not a usable database, so it may be moved aside — except the
// flock timeout (another instance holds it) and errors from the operating
// system about the path itself (permissions, I/O, no space): moving the file
// would not cure those, and a readable registry must never be discarded for
// them. bbolt reports damage in many shapes (ErrInvalid, checksum, "file
// size too small", bad mappings, panics, faults on pages past the end of a
// truncated file), so the rule is this exclusion, not a list of them.
func openDB(path string, timeout time.Duration) (db *bolt.DB, err error) {
	var file *os.File
	var openErr error
	// A truncated file whose meta pages point past its end makes bbolt read
	// unmapped memory; turn that fault into a panic recovered below.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if file != nil {
				// bbolt may have mmapped the file before panicking; the
				// mapping (leaked, at most the file's size) keeps the open
				// file description, and with it the flock, alive past
				// Close. Unlock explicitly so the file can be moved aside.
				_ = syscall.Flock(int(file.Fd()), syscall.LOCK_UN)
				_ = file.Close()
			}
			db, err = nil, &corruptError{fmt.Errorf("bbolt panicked opening it: %v", p)}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout: timeout,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file, openErr = f, err
			return f, err
		},
	})
	if err == nil || openErr != nil || errors.Is(err, berrors.ErrTimeout) || isOSError(err) {
		return db, err
	}
	return nil, &corruptError{err}
}

// isOSError reports an error the operating system raised (EACCES, EIO,
// ENOSPC, …), as opposed to bbolt judging the content.
func isOSError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno)
}

// prepare checks that db is a registry whose structure can be read end to
// end, or a fresh file (createBuckets makes it one).
func prepare(db *bolt.DB) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &corruptError{fmt.Errorf("bbolt panicked reading it: %v", p)}
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			empty := true
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fmt.Errorf("registry %s: %w: it holds other buckets and no snakepit schema; point Options.Path elsewhere", db.Path(), ErrNotRegistry)
			}
			return nil
		}
		if s := meta.Get(keySchema); !bytes.Equal(s, schemaV1) {
			return fmt.Errorf("registry %s: %w: schema %q, this build understands %q; use a matching snakepit or another Options.Path", db.Path(), ErrNotRegistry, s, schemaV1)
		}
		for _, name := range [][]byte{bucketRuns, bucketWorkers} {
			b := tx.Bucket(name)
			if b == nil {
				return &corruptError{fmt.Errorf("bucket %q missing", name)}
			}
			// Touch every page so damage shows here, where it can be
			// recovered from, not in the middle of a reap.
			if err := b.ForEach(func(k, v []byte) error {
				if v == nil {
					return &corruptError{fmt.Errorf("bucket %q holds a nested bucket %q", name, k)}
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

// createBuckets gives a fresh file (one prepare accepted) its schema and
// buckets. It runs in the transaction that records the run: every commit
// writes and syncs the file twice, so a separate one would cost a start
// two more fsyncs for nothing.
func createBuckets(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if meta.Get(keySchema) == nil {
		if err := meta.Put(keySchema, schemaV1); err != nil {
			return err
		}
	}
	for _, name := range [][]byte{bucketRuns, bucketWorkers} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// quarantine renames a corrupt file to <path>.corrupt-<timestamp>. It holds
// the file's lock while checking that path still names the same file, so two
// instances starting on the same corrupt file cannot end up renaming the
// fresh file the other one just created. It returns "" when there was
// nothing (left) to move.
func quarantine(path string, timeout time.Duration) (string, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("registry %s is corrupt and cannot be opened to move it aside: %w; move or delete it by hand", path, err)
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK || time.Now().After(deadline) {
			return "", lockedError(path)
		}
		time.Sleep(50 * time.Millisecond)
	}
	held, err1 := f.Stat()
	now, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		return "", nil // replaced meanwhile; the caller retries on the new file
	}
	dst := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("registry %s is corrupt and cannot be moved aside: %w; move or delete it by hand", path, err)
	}
	return dst, nil
}

// lockedError builds the error for a held lock, naming the holder if a copy
// of the file shows a run whose host is verifiably alive. The file cannot be
// opened in place (bbolt's shared lock conflicts with the holder's), and a
// copy may be torn mid-write, so this is best effort.
func lockedError(path string) error {
	e := &LockedError{Path: path}
	runs := peekRuns(path)
	boot, _ := proc.BootID()
	var newest time.Time
	for _, r := range runs {
		st, err := proc.ReadStat(r.HostPID)
		if err != nil || st.Zombie() || st.StartTime != r.HostStartTime || r.BootID != boot {
			continue
		}
		if e.HolderPID == 0 || r.StartedAt.After(newest) {
			e.HolderPID, e.HolderRunID, newest = r.HostPID, r.RunID, r.StartedAt
		}
	}
	return e
}

func peekRuns(path string) (runs []Run) {
	defer func() {
		if recover() != nil {
			runs = nil
		}
	}()
	src, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil || fi.Size() > 64<<20 {
		return nil
	}
	tmp, err := os.CreateTemp("", "snakepit-registry-peek-*.db")
	if err != nil {
		return nil
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, src)
	if cerr := tmp.Close(); err != nil || cerr != nil {
		return nil
	}
	db, err := bolt.Open(tmp.Name(), 0o600, &bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if err != nil {
		return nil
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRuns); b != nil {
			return b.ForEach(func(k, v []byte) error {
				if r, err := decodeRun(k, v); err == nil {
					runs = append(runs, r)
				}
				return nil
			})
		}
		return nil
	})
	return runs
}

// RunID is the id of the current run.
func (r *Registry) RunID() string { return r.runID }

// Path is the registry file.
func (r *Registry) Path() string { return r.path }

func (r *Registry) mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return errClosed
	}
	return err
}

func (r *Registry) batch(fn func(*bolt.Tx) error) error {
	if r.closed.Load() {
		return errClosed
	}
	return r.mapErr(r.db.Batch(fn))
}

func (r *Registry) view(fn func(*bolt.Tx) error) error {
	if r.closed.Load() {
		return errClosed
	}
	return r.mapErr(r.db.View(fn))
}

func validWorkerID(id string) error {
	if id == "" || len(id) > 256 {
		return fmt.Errorf("registry: worker id %q: %w: must be 1 to 256 bytes", id, ErrInvalidName)
	}
	return nil
}

// Reserve records that workerID of this run is about to be spawned. Call it
// before the fork, so a crash between fork and Activate still leaves the run
// id (and so the child) findable. Reserving over a record whose process is
// gone replaces it with a warning; over a live one it fails with
// ErrStillActive.
func (r *Registry) Reserve(workerID string) error {
	if err := validWorkerID(workerID); err != nil {
		return err
	}
	key := recordKey(r.runID, workerID)
	now := time.Now().UTC()
	var stale *Record
	err := r.batch(func(tx *bolt.Tx) error {
		stale = nil // Batch may run this function more than once
		b := tx.Bucket(bucketWorkers)
		if v := b.Get(key); v != nil {
			if old, err := decodeRecord(key, v); err == nil && old.State == StateActive {
				if proc.Verify(old.Identity()) == nil {
					return fmt.Errorf("registry: Reserve(%s): %w (pid %d); stop and reap it, then Unregister, before reserving again", workerID, errStillActive, old.PID)
				}
				stale = &old
			}
		}
		return b.Put(key, encode(Record{
			RunID: r.runID, WorkerID: workerID, State: StateReserved,
			HostPID: r.host.HostPID, HostStartTime: r.host.HostStartTime, Created: now, Updated: now,
		}))
	})
	if err == nil && stale != nil {
		r.log.Warn("replaced the record of an exited worker that was never unregistered (the spawner should Unregister after reaping)",
			"worker_id", workerID, "pid", stale.PID)
	}
	return err
}

// Activate fills in the process of a reserved worker: pid, and from /proc its
// pgid and start time, plus the boot id. Call it right after the fork,
// before the process can be reaped (a zombie is fine).
func (r *Registry) Activate(workerID string, pid int) error {
	if err := validWorkerID(workerID); err != nil {
		return err
	}
	st, err := proc.ReadStat(pid)
	if err != nil {
		return fmt.Errorf("registry: Activate(%s, %d): %w (activate right after the fork, before the process is reaped)", workerID, pid, err)
	}
	boot, err := proc.BootID()
	if err != nil {
		return err
	}
	if !st.Zombie() && !carriesRunIDSoon(pid, r.runID) {
		r.log.Warn("activated process does not carry the run id in argv or environ; orphan reaping will refuse to signal it",
			"worker_id", workerID, "pid", pid)
	}
	key := recordKey(r.runID, workerID)
	now := time.Now().UTC()
	return r.batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWorkers)
		v := b.Get(key)
		if v == nil {
			return fmt.Errorf("registry: Activate(%s, %d): %w; call Reserve before spawning", workerID, pid, errNotReserved)
		}
		rec, err := decodeRecord(key, v)
		if err != nil {
			return fmt.Errorf("registry: Activate(%s, %d): %w; call Reserve again before spawning", workerID, pid, err)
		}
		if rec.State == StateActive && rec.PID != pid {
			return fmt.Errorf("registry: Activate(%s, %d): %w (pid %d is recorded); Unregister it after reaping first", workerID, pid, errStillActive, rec.PID)
		}
		rec.State, rec.PID, rec.PGID, rec.StartTime, rec.BootID, rec.Updated = StateActive, pid, st.PGID, st.StartTime, boot, now
		return b.Put(key, encode(rec))
	})
}

// Unregister deletes the record of workerID of this run. Call it only after
// the process has been reaped. Unregistering an unknown worker is a no-op.
func (r *Registry) Unregister(workerID string) error {
	if err := validWorkerID(workerID); err != nil {
		return err
	}
	key := recordKey(r.runID, workerID)
	return r.batch(func(tx *bolt.Tx) error { return tx.Bucket(bucketWorkers).Delete(key) })
}

// lookup returns the record of workerID of this run.
func (r *Registry) lookup(workerID string) (Record, bool, error) {
	key := recordKey(r.runID, workerID)
	var rec Record
	var found bool
	err := r.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketWorkers).Get(key)
		if v == nil {
			return nil
		}
		var err error
		rec, err = decodeRecord(key, v)
		found = err == nil
		return err
	})
	return rec, found, err
}

// Records returns the worker records of all runs in the file. Malformed
// records are skipped with a warning.
func (r *Registry) Records() ([]Record, error) { return r.records(nil) }

// RunRecords returns the worker records of one run.
func (r *Registry) RunRecords(runID string) ([]Record, error) {
	if err := validRunID(runID); err != nil {
		return nil, err
	}
	return r.records([]byte(runID + "/"))
}

func (r *Registry) records(prefix []byte) ([]Record, error) {
	var out []Record
	err := r.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketWorkers).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			rec, err := decodeRecord(k, v)
			if err != nil {
				r.log.Warn("skipping malformed worker record", "key", string(k), "err", err)
				continue
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// Runs returns every run entry in the file, the current one included.
func (r *Registry) Runs() ([]Run, error) {
	var out []Run
	err := r.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRuns).ForEach(func(k, v []byte) error {
			run, err := decodeRun(k, v)
			if err != nil {
				r.log.Warn("skipping malformed run entry", "key", string(k), "err", err)
				return nil
			}
			out = append(out, run)
			return nil
		})
	})
	return out, err
}

// Close deletes this run's entry if no worker record of it is left (a host
// that still has records is treated like a crashed one: the next reaper
// deals with them) and closes the file. Closing twice is a no-op.
func (r *Registry) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	var left int
	if r.closeCgroups() != nil {
		left++ // keep the run's entry: the next start ends its cgroup
	}
	err := r.db.Update(func(tx *bolt.Tx) error {
		prefix := []byte(r.runID + "/")
		c := tx.Bucket(bucketWorkers).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			left++
		}
		if left > 0 {
			return nil
		}
		return tx.Bucket(bucketRuns).Delete([]byte(r.runID))
	})
	if left > 0 {
		r.log.Warn("closing the registry with worker records left; the next start will reap them", "records", left)
	}
	if cerr := r.db.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("registry %s: close: %w", r.path, err)
	}
	return nil
}

// carriesRunIDSoon allows for the moment after exec during which the kernel
// has not yet published the new program's argv/environ (/proc reads them
// empty): exec.Cmd.Start returns as soon as exec has begun.
func carriesRunIDSoon(pid int, runID string) bool {
	deadline := time.Now().Add(100 * time.Millisecond)
	for {
		if proc.CarriesRunID(pid, runID) {
			return true
		}
		if time.Now().After(deadline) || !proc.Alive(pid) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}
