// Package doctor checks a machine for what a snakepit pool needs before
// anything starts: the interpreter and its packages, the adapter, the
// process registry, leftovers of dead runs, resource limits, the Linux
// features the no-survivor guarantees rest on, cgroup containment and the
// remote agents. `snakepit doctor` prints its report.
//
// Contract: Run starts no worker, writes nothing (the registry is read
// under bbolt's shared lock, never opened for writing) and signals no
// process. Every check is bounded (Options.Timeout per check). A check
// fails only for what would make a pool fail or break a guarantee; what
// only costs speed or an optional feature is a warning. Report.OK is true
// when no check failed.
package doctor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/discovery"
)

// Status is a check's verdict.
type Status string

// The verdicts: only Fail makes a report not OK.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
	// Skip: the check does not apply (e.g. no agents configured).
	Skip Status = "skip"
)

// Check is one line of the report.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do; empty when the check passed.
	Fix string `json:"fix,omitempty"`
}

// Report is every check, in order.
type Report struct {
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
}

// Options say what to check; they mirror the flags of `snakepit run`.
type Options struct {
	Python     string   // explicit interpreter; empty: discovery as the App does it
	Adapter    string   // package.module.Class; empty: not checked
	PythonPath []string // extra sys.path entries for the adapter
	// RegistryPath is the registry file (the instance's default path when
	// the command resolved it).
	RegistryPath string
	Workers      int // local worker processes the pool would start
	// Agents, when set, are checked for reachability with the token from
	// AgentTokenFile (or $SNAKEPIT_AGENT_TOKEN) and AgentTLS.
	Agents         discovery.Source
	AgentTokenFile string
	AgentTLS       *tls.Config
	// Timeout bounds each check; default DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout bounds one check when Options.Timeout is 0.
const DefaultTimeout = 20 * time.Second

// Run runs every check. ctx bounds the whole run.
func Run(ctx context.Context, o Options) Report {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	var r Report
	add := func(cs ...Check) { r.Checks = append(r.Checks, cs...) }
	add(checkPython(ctx, o)...)
	add(checkBytecodeEnv())
	add(checkRegistry(o)...)
	add(checkNoFile(o.Workers))
	add(checkProc(), checkPdeathsig())
	add(checkCgroup())
	add(checkAgents(ctx, o)...)
	r.OK = true
	for _, c := range r.Checks {
		if c.Status == Fail {
			r.OK = false
		}
	}
	return r
}

// WriteText prints one line per check ("PASS  name: detail") and, under
// a failed or warned check, its fix.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-4s  %s: %s\n", strings.ToUpper(string(c.Status)), c.Name, c.Detail)
		if c.Fix != "" && (c.Status == Fail || c.Status == Warn) {
			fmt.Fprintf(&b, "      fix: %s\n", c.Fix)
		}
	}
	if r.OK {
		b.WriteString("doctor: every required check passed\n")
	} else {
		b.WriteString("doctor: a required check failed; see the fix lines above\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one JSON document.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
