package pool

// OpenBatchLen is how many calls wait in tool's open batch, for the tests
// of package pool_test to synchronise on.
func OpenBatchLen(p *Pool, tool string) int {
	b := p.batcherFor(tool)
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.open)
}
