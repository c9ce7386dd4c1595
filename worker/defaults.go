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
	// DefaultStopGrace is a worker's time between SIGTERM and SIGKILL.
	DefaultStopGrace = 2 * time.Second
)
