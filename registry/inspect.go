package registry

import (
	"errors"
	"fmt"
	"os"
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
func Inspect(path string, timeout time.Duration) ([]Run, []Record, error) {
	if timeout <= 0 {
		timeout = time.Second
	}
	if _, err := os.Stat(path); err != nil {
		return nil, nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, nil, lockedError(path)
		}
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, path, err)
	}
	defer db.Close()
	var runs []Run
	var recs []Record
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
