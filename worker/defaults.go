package worker

import "time"

// Defaults shared by every worker type, the pool and the host's servers,
// written once here; package snakepit re-exports them for users.
const (
	// DefaultMaxMessageBytes bounds one gRPC message (arguments, results,
	// stream chunks) in both directions.
	DefaultMaxMessageBytes = 16 << 20
	// DefaultHungGrace is how long a call may stay inside a worker after
	// its context ended before the worker is treated as hung.
	DefaultHungGrace = 2 * time.Second
	// DefaultCapacity is how many calls the host sends one worker process
	// at once. It matches the Python worker's own default thread count
	// (snakepit_bridge DEFAULT_THREADS) so that, with more callers than
	// workers, each process always has the next request in hand (Capacity 1
	// cost 24–53 % of throughput), while the pool's least-loaded dispatch
	// still spreads calls over idle workers first. An adapter that must run
	// one call at a time sets snakepit_thread_safe = False and the worker
	// reports capacity 1. Measured choice: docs/BENCHMARKS.md.
	DefaultCapacity = 8
	// DefaultStopGrace is a worker's time between SIGTERM and SIGKILL.
	DefaultStopGrace = 2 * time.Second
)
