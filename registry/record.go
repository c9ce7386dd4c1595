package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/internal/proc"
)

// State is the lifecycle state of a worker record.
type State string

const (
	// StateReserved: written before the fork; there is no pid yet.
	StateReserved State = "reserved"
	// StateActive: the process exists (or existed) with the recorded pid.
	StateActive State = "active"
)

// Record is one worker process of one run, stored under "<runID>/<workerID>".
type Record struct {
	RunID         string    `json:"run_id"`
	WorkerID      string    `json:"worker_id"`
	State         State     `json:"state"`
	PID           int       `json:"pid,omitempty"`
	PGID          int       `json:"pgid,omitempty"`
	StartTime     uint64    `json:"start_time,omitempty"` // /proc/PID/stat field 22
	BootID        string    `json:"boot_id,omitempty"`
	HostPID       int       `json:"host_pid"`
	HostStartTime uint64    `json:"host_start_time"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
}

// Identity is what must verify before the recorded process may be signalled.
func (r Record) Identity() proc.Identity {
	return proc.Identity{PID: r.PID, StartTime: r.StartTime, BootID: r.BootID, RunID: r.RunID}
}

// Run is one Open of a registry: one host process, one run id.
type Run struct {
	RunID         string    `json:"run_id"`
	Instance      string    `json:"instance,omitempty"`
	HostPID       int       `json:"host_pid"`
	HostStartTime uint64    `json:"host_start_time"`
	BootID        string    `json:"boot_id"`
	StartedAt     time.Time `json:"started_at"`
	// Cgroup is the run's cgroup v2 directory (snakepit-<run id>), empty
	// without cgroup containment.
	Cgroup string `json:"cgroup,omitempty"`
}

// errMalformed is wrapped by every decoding failure.
var errMalformed = errors.New("malformed registry entry")

func recordKey(runID, workerID string) []byte { return []byte(runID + "/" + workerID) }

// splitKey splits "<runID>/<workerID>"; run ids cannot contain '/', worker
// ids may.
func splitKey(key []byte) (runID, workerID string, ok bool) {
	runID, workerID, ok = strings.Cut(string(key), "/")
	if !ok || workerID == "" || validRunID(runID) != nil {
		return "", "", false
	}
	return runID, workerID, true
}

// decodeRecord decodes a worker record and checks it against its key. It
// never panics: a registry written by a crashing or newer host must not stop
// this one from starting.
func decodeRecord(key, value []byte) (Record, error) {
	runID, workerID, ok := splitKey(key)
	if !ok {
		return Record{}, fmt.Errorf("%w: key %q is not <run id>/<worker id>", errMalformed, key)
	}
	var r Record
	if err := json.Unmarshal(value, &r); err != nil {
		return Record{}, fmt.Errorf("%w: key %q: %v", errMalformed, key, err)
	}
	switch {
	case r.RunID != runID || r.WorkerID != workerID:
		return Record{}, fmt.Errorf("%w: key %q holds the record of %q/%q", errMalformed, key, r.RunID, r.WorkerID)
	case r.State != StateReserved && r.State != StateActive:
		return Record{}, fmt.Errorf("%w: key %q: unknown state %q", errMalformed, key, r.State)
	case r.State == StateActive && r.PID <= 0:
		return Record{}, fmt.Errorf("%w: key %q: active without a pid", errMalformed, key)
	case r.PID < 0 || r.PGID < 0 || r.HostPID < 0:
		return Record{}, fmt.Errorf("%w: key %q: negative pid", errMalformed, key)
	}
	return r, nil
}

func decodeRun(key, value []byte) (Run, error) {
	var r Run
	if err := json.Unmarshal(value, &r); err != nil {
		return Run{}, fmt.Errorf("%w: run %q: %v", errMalformed, key, err)
	}
	if r.RunID != string(key) || validRunID(r.RunID) != nil {
		return Run{}, fmt.Errorf("%w: run key %q holds run %q", errMalformed, key, r.RunID)
	}
	return r, nil
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Record and Run hold only strings, numbers and times.
		panic("registry: encode: " + err.Error())
	}
	return b
}
