// Package proc inspects Linux processes through /proc and signals them only
// when they are provably ours.
//
// Contract:
//
//   - A process is "ours" when its Identity verifies: the pid exists and is
//     not a zombie, the machine's boot id equals the recorded one, the
//     process start time (field 22 of /proc/PID/stat) equals the recorded
//     one, and it carries the recorded run id — in argv as
//     "--snakepit-run-id <id>" (or "--snakepit-run-id=<id>") or in its
//     environment as exactly "SNAKEPIT_RUN_ID=<id>". Pid plus boot id plus
//     start time names one process for the lifetime of the machine; the run
//     id proves that process is a snakepit child and not a record's mistake.
//     Matching is exact, never by substring.
//   - Nothing in this package signals a process whose identity did not verify
//     at the moment of signalling. Where the kernel has pidfds (Linux 5.3+),
//     the pidfd is opened first, the identity verified afterwards, and the
//     signal sent through the pidfd, so a pid recycled between the check and
//     the signal cannot be hit. Without pidfds the identity is re-verified
//     immediately before each kill(2), which leaves a window of microseconds.
//   - A process group is signalled (kill(-pgid)) only while its verified
//     leader (pgid == pid) is still unreaped: a pgid cannot be recycled while
//     any member, the leader included, still exists, so the group is the one
//     our process created. Once the leader is gone, remaining members are
//     signalled one by one, each verified by its run id.
//   - Unreadable /proc entries (other users' processes, races with exit) are
//     skipped, never reported as errors, and never treated as ours.
//
// The package imports nothing else of snakepit; it is Linux only.
package proc
