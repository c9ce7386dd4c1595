// Package pool dispatches tool calls to a set of workers. It knows nothing
// about processes or supervisors: the supervisor Adds workers built with
// Spec.Events set to the Pool, runs them, and the Pool follows each worker's
// lifecycle through the worker.Events it implements (Starting, Ready,
// Exited) plus WorkerFailed when the supervisor gives up on one. Add a worker
// before running it; events that arrive for an id not yet added are kept and
// applied by Add.
//
// # Slots and the queue
//
// A worker in state Ready has Capacity slots (in-flight calls). A call takes
// a free slot, round-robin across workers, or waits in one FIFO queue. When a
// slot frees, it is handed directly to the oldest waiter that can use it
// (strict-affinity waiters can use only their session's worker); no other
// waiter wakes. The queue holds at most MaxQueue waiters; a call beyond that
// fails at once with ErrPoolSaturated. Waiting ends in exactly one of three
// ways, decided under the pool's lock so there is a single winner:
//   - a slot was handed over: the call runs (if the caller's context ended at
//     the same moment, the slot is passed on and the context's error returned);
//   - the caller's context ended: its error is returned, the waiter is gone;
//   - the queue timeout expired first: ErrQueueTimeout. A call that was
//     handed a slot is never answered with ErrQueueTimeout.
//
// Calls made while no worker is ready (the pool is starting, or every worker
// is restarting) wait in the same queue for up to ReadyTimeout and fail with
// ErrNotReady, or at once with ErrNotReady wrapping the workers' startup
// errors when every worker has failed for good. Once a ready worker has
// reported its tools, a call for a tool no ready worker offers fails with
// *worker.UnknownToolError without reaching a worker. The pool assumes the
// workers run the same adapter: it routes by capacity, not by tool.
//
// # Prefetch
//
// A worker that reports worker.Info.Prefetch = k at Ready (the snakepit
// Python worker's sync server does, k = 4 × its capacity, the most the
// pool uses) may be sent up to k calls beyond its Capacity; it holds them
// in order and runs each as soon
// as one of its calls ends, so its next call is already there instead of
// one host round trip later. A prefetched call cannot move to a worker
// that frees up first, so the pool prefetches only a call that would
// otherwise queue, and only behind calls that end soon: when no worker it
// could use has a free slot (dispatch still takes the least-loaded worker
// first), when no older call waits (prefetching passes no waiter), for a
// tool whose calls take under 2 ms of a worker's time (each call's wall
// time shared among the calls beside it, the serial rule's measure,
// averaged over its recent calls whatever their outcome; a brand-new tool
// counts as short until its first call ends), not for a batch, and only
// to a worker running nothing but such calls. Options.DisableSerialTools turns
// prefetching off with the measure. A prefetched call counts in flight
// (Stats.InFlight and a worker's InFlight may exceed Capacity by up to k)
// and, until its worker starts it and while no worker has a free slot, in
// Load's Queued and OldestWait (the autoscaler's signal: it waits because
// every worker is busy; Stats.Queued and QueueWait count the pool's queue
// only). It is past the pool's queue (MaxQueue, QueueTimeout do not apply
// to it) and shares its worker's fate: if the worker is killed (hung,
// Stop, a drain's end) it fails as a call that was sent, even if it never
// started. A worker that reports 0, every
// worker type that does not ask for it, is never sent more than its
// Capacity.
//
// # Serial tools
//
// A tool whose calls gain nothing from running side by side on one worker
// (CPU-bound pure Python: the calls take turns on the process's GIL) runs
// at most one call per worker; its other calls wait in the queue, FIFO,
// for the first worker without one of them, and never hold back a call of
// another tool queued behind them. The pool learns this per tool from the
// calls' times: a tool whose calls look long is first run one per worker
// for a few calls (a probe) to learn its time alone; only a tool taking at
// least 2 ms alone can be marked (a faster one keeps the whole Capacity).
// A mark lasts 30 s, then the tool is measured again. A slow tool that
// gains from running side by side never runs alone under steady load, so
// it is probed again to refresh its time alone: 30 s after it was first
// found free, then at doubling intervals up to 4 min, back to 30 s once
// marked. Stats.SerialTools
// lists the marked tools, and Options.DisableSerialTools turns the rule
// off. See serial.go for the measure.
//
// # Deadlines and hung workers
//
// The call's context goes to the worker unchanged, so its deadline becomes
// the worker's deadline. If a worker has not returned HungGrace after that
// context ended, the pool kills it (Worker.Kill) and the call fails with a
// *WorkerTimeoutError (errors.Is worker.ErrWorkerTimeout).
//
// # Crashes and retries
//
// A worker that dies under a call fails that call with its error (errors.Is
// worker.ErrWorkerCrashed). With CallOptions.Idempotent the call runs again on
// another worker, at most RetryAttempts more times with doubling RetryBackoff.
// A worker found gone before the call started (worker.ErrWorkerUnavailable)
// is retried the same way for any call, since nothing ran.
//
// # Session affinity
//
// A call with a SessionID records the worker that took it, for AffinityTTL.
// The next call of that session, by CallOptions.Affinity:
//   - AffinityHint (default): uses that worker if it has a free slot,
//     otherwise any worker;
//   - AffinityStrictQueue: waits for a slot on that worker only;
//   - AffinityStrictFailFast: uses that worker or fails with ErrSessionWorkerBusy.
//
// If that worker has exited, failed or left since, hint falls back to any
// worker and the strict modes fail with ErrSessionWorkerUnavailable (also
// strict waiters already queued for it). A session without a live record
// behaves as hint.
//
// # Errors
//
// Rejected before any worker is touched: *InvalidCallError (ErrInvalidCall:
// nil call, empty tool, non-object args, context already done, negative
// queue timeout, unknown affinity), *worker.UnknownToolError, ErrPoolStopping,
// ErrPoolSaturated, ErrQueueTimeout, *NotReadyError (ErrNotReady),
// ErrSessionWorkerBusy, ErrSessionWorkerUnavailable, or the context's error.
// From the worker: *worker.ToolError, worker.ErrWorkerCrashed,
// *WorkerTimeoutError, or the context's error.
//
// # Batching
//
// A tool that declares worker.ToolSpec.BatchMaxSize is a batch tool: its
// calls (without a session, in a pool whose workers are all
// worker.BatchExecutors) are coalesced into one request per worker and the
// results split back. A batch is sent when it is full, when the tool is
// idle (fewer of its batches in flight than ready workers) or BatchMaxWait
// after its first call; it takes one slot. Each call keeps its own
// deadline and cancellation (leaving the batch before it is sent; after,
// returning its context's error at once), error, request id and metadata,
// counts once in Stats, and after a crash is retried (or not) by the rules
// above; Stats.Batches is the histogram of batch sizes. See batch.go.
//
// # Membership
//
// Workers may join and leave while the pool serves. Add one (then run it);
// to take one out, Retire it first — it leaves rotation at once (strict
// waiters for it fail with ErrSessionWorkerUnavailable, hint sessions move
// on) and Retire returns once its in-flight calls are done or its context
// ends — then stop it and Remove it. A worker may advertise its capacity in
// worker.Info when it becomes ready (a remote agent does); a
// *worker.CrashError with Agent set fails only that call, not the worker.
//
// # Stopping
//
// Stop (or Drain) fails new calls and queued waiters with ErrPoolStopping,
// lets in-flight calls finish until its context ends, then cancels theirs,
// and returns once none is in flight (bounded: hung workers are killed after
// HungGrace, and Stop gives up with a *StopError shortly after that).
//
// # Who imports it
//
// Applications reach this package through the root package snakepit, which
// wraps it and re-exports the types its API returns; the names exported
// here beyond that are seams between snakepit's own packages.
package pool
