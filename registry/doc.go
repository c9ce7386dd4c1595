// Package registry is the ProcessRegistry: a bbolt file that records every
// worker process of every snakepit run, so that no process outlives the
// application even when the host is killed with SIGKILL.
//
// Contract:
//
//   - One live Registry per file. Open takes bbolt's exclusive file lock; a
//     second Open of the same file fails (after Options.LockTimeout) with a
//     *LockedError matching ErrLocked. Therefore every other run recorded in
//     an opened file belongs to a host that is gone, and its processes are
//     orphans.
//   - A run is one Open with one run id (NewRunID; unique, never reused).
//     Open records it in the "runs" bucket with the host's pid, start time
//     and boot id.
//   - The spawner calls Reserve(worker) before forking, Activate(worker, pid)
//     right after the fork (this reads the pid's pgid and start time from
//     /proc, so the record identifies exactly that process), and Unregister
//     only after the process has been reaped. A crash at any point leaves a
//     record (or at least the run id) behind for the next reaper.
//   - ReapOrphans stops the processes of dead runs. It signals a process
//     only after internal/proc has verified its identity (boot id, start
//     time, run id in argv or environ) and only through a pidfd; a record
//     that does not verify is a recycled pid and is dropped unsignalled. It
//     then sweeps /proc for anything still carrying a dead run id
//     (descendants that left the group, workers only reserved), ends and
//     removes the dead runs' cgroup v2 directories (recorded in their
//     entries, named snakepit-<run id>), and finally deletes the dead runs.
//     It never touches the current run.
//   - Contain (run by Service after the reap) sets up the run's cgroup v2
//     subtree per the containment policy, records it in the run's entry and
//     starts its host-death watchdog; Cgroups hands it to the launchers.
//     Close kills what is left in it and removes it.
//   - Close keeps this run's entry when worker records remain, so a host that
//     stops without reaping its workers still leaves them to the next reaper.
//   - The file is created 0600 in a 0700 directory. A corrupt file is moved
//     aside as <path>.corrupt-<timestamp> with a warning and replaced; a
//     valid bbolt file that is not a registry is refused, never moved.
//
// The package imports only internal/proc and internal/cgroup from snakepit.
//
// # Who imports it
//
// Applications reach this package through the root package snakepit; Open,
// Reserve and Activate are public for tools (the snakepit command, the
// snakepittest conformance kit) that inspect or seed a registry directly.
package registry
