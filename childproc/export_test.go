package childproc

// ForceMoveAfterFork makes Start take the fallback used where clone3 is
// refused (move into the cgroup right after the fork); it returns the undo.
func ForceMoveAfterFork() (undo func()) {
	old := cloneIntoUnsupported.Swap(true)
	return func() { cloneIntoUnsupported.Store(old) }
}
