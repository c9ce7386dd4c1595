package worker

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// SignalName is sig's conventional name ("SIGKILL"), as messages, stats
// and the agent protocol spell it; "" for 0 (the process exited).
func SignalName(sig syscall.Signal) string {
	if sig == 0 {
		return ""
	}
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return sig.String()
}

// SignalNamed is the signal SignalName spells name, for one that crossed
// the wire by name (an agent's crash report); 0 for "" or a name this
// platform does not know.
func SignalNamed(name string) syscall.Signal {
	if name == "" {
		return 0
	}
	return unix.SignalNum(name)
}
