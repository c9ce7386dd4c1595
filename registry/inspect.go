package registry

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Inspect reads the runs and worker records of the registry file at path
// without recording a run or writing anything, for tools that look before
// anything starts (snakepit doctor). It takes bbolt's shared lock, so a
// file held by a live instance gives a *LockedError (matching ErrLocked)
// after timeout (default 1s). A missing file gives an error matching
// os.ErrNotExist. Every run in a file that Inspect could read belongs to a
// host that is gone: a live host holds the lock.
//
// A corrupt file gives an error matching ErrUnavailable; bbolt's panics on
// one (and faults on a truncated file's pages) are recovered into it.
func Inspect(path string, timeout time.Duration) (runs []Run, recs []Record, err error) {
	if timeout <= 0 {
		timeout = time.Second
	}
	if _, err := os.Stat(path); err != nil {
		return nil, nil, err
	}
	var file *os.File
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if file != nil {
				// A leaked mapping would keep the shared flock alive, and
				// with it block the next Open (see openDB).
				_ = syscall.Flock(int(file.Fd()), syscall.LOCK_UN)
				_ = file.Close()
			}
			runs, recs = nil, nil
			err = fmt.Errorf("%w: %s: %w", ErrUnavailable, path, &corruptError{fmt.Errorf("bbolt panicked reading it: %v", p)})
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		}})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, nil, lockedError(path)
		}
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRuns); b != nil {
			_ = b.ForEach(func(k, v []byte) error {
				if r, err := decodeRun(k, v); err == nil {
					runs = append(runs, r)
				}
				return nil
			})
		}
		if b := tx.Bucket(bucketWorkers); b != nil {
			_ = b.ForEach(func(k, v []byte) error {
				if r, err := decodeRecord(k, v); err == nil {
					recs = append(recs, r)
				}
				return nil
			})
		}
		return nil
	})
	return runs, recs, err
}
