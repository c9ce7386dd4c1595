package childproc

// ForceEnterBySh makes Start take the fallback used where clone3 is
// refused (/bin/sh enters the cgroup, then execs); it returns the undo.
func ForceEnterBySh() (undo func()) {
	old := cloneIntoUnsupported.Swap(true)
	return func() { cloneIntoUnsupported.Store(old) }
}
