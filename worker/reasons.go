package worker

// Why a worker's process is recycled by plan: the reason a Recycler's
// Recycle and Events.Recycled carry, the keys of the pool's
// Stats.RecycleReasons and the reason label of snakepit_worker_recycles_total.
// The set is fixed so that a metric label never carries free text; the pool
// counts any other reason as RecycleOther.
const (
	RecycleRequests  = "requests"  // the process served its request quota
	RecycleAge       = "age"       // the process reached its maximum age
	RecycleMemory    = "memory"    // the process's resident memory passed its limit
	RecycleReload    = "reload"    // App.Reload asked for new code
	RecycleAbandoned = "abandoned" // a tool ignored cancellation and kept a slot busy
	RecycleOther     = "other"
)

// RecycleReasons lists the recycle reasons.
func RecycleReasons() []string {
	return []string{RecycleRequests, RecycleAge, RecycleMemory, RecycleReload, RecycleAbandoned, RecycleOther}
}
