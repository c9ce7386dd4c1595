package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/proc"
	"github.com/snakepit-go/snakepit/internal/testutil"
)

// chaosSeconds is how long the chaos runs: a short run inside `make test`,
// SNAKEPIT_CHAOS_SECONDS=30 for `make chaos`.
func chaosSeconds(t *testing.T) time.Duration {
	v := os.Getenv("SNAKEPIT_CHAOS_SECONDS")
	if v == "" {
		return 6 * time.Second
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("SNAKEPIT_CHAOS_SECONDS=%q: want a positive number of seconds", v)
	}
	return time.Duration(n) * time.Second
}

type chaosOutcome struct {
	idempotent bool
	id         string
	err        error
	got        string
	took       time.Duration
}

// TestChaosPoolHealsUnderRandomKills: 32 callers, a random worker process
// (ready or still starting) SIGKILLed every 250 ms. Idempotent calls must
// all succeed, other calls may fail only with ErrWorkerCrashed, every
// success must really have run (its id is in the record file), no call may
// hang, and the pool must be back to N ready within 3 s after the chaos.
func TestChaosPoolHealsUnderRandomKills(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long tests, for make test's time
	const workers, callers = 4, 32
	dur := chaosSeconds(t)
	record := filepath.Join(t.TempDir(), "ran.txt")
	app := newApp(t, snakepit.Config{Workers: workers, QueueTimeout: 20 * time.Second, Adapter: healingAdapter, PythonPath: healingPath(t),
		// A slower setup() widens the start-up window, so that many kills
		// land before the handshake (the case that used to give workers up).
		Env: map[string]string{"HEALING_SETUP_S": "0.2"}})

	stop := make(chan struct{})
	outcomes := make(chan chaosOutcome, 1<<16)
	var callersWG sync.WaitGroup
	for c := 0; c < callers; c++ {
		callersWG.Add(1)
		go func() {
			defer callersWG.Done()
			idem := c%2 == 0
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c%d-%d", c, n)
				opts := []snakepit.CallOption{}
				if idem {
					opts = append(opts, snakepit.Idempotent())
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t0 := time.Now()
				res, err := snakepit.Decode[string](app.Execute(ctx, "record", map[string]any{"id": id, "path": record}, opts...))
				cancel()
				outcomes <- chaosOutcome{idempotent: idem, id: id, err: err, got: res, took: time.Since(t0)}
			}
		}()
	}

	kills := 0
	rng := rand.New(rand.NewPCG(1, 2))
	tick := time.NewTicker(250 * time.Millisecond)
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		<-tick.C
		ps := workerProcs(t, app, "")
		if len(ps) == 0 {
			continue
		}
		if signalIfOurs(app, ps[rng.IntN(len(ps))], syscall.SIGKILL) {
			kills++
		}
	}
	tick.Stop()
	chaosEnd := time.Now()
	close(stop)
	waited := make(chan struct{})
	go func() { callersWG.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(40 * time.Second):
		t.Fatal("callers still inside calls 40 s after the chaos: a call hung")
	}
	close(outcomes)

	var healed time.Duration
	testutil.Eventually(t, 3*time.Second, "the pool back to N ready within 3 s after the chaos", func() bool {
		w := app.Stats().Pool.Workers
		healed = time.Since(chaosEnd)
		return w.Idle+w.Busy == workers
	})

	ran := map[string]bool{}
	f, err := os.Open(record)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ran[sc.Text()] = true
	}
	f.Close()

	var total, ok, idemOK, idemFail, crashed, otherFail, neverRan, wrong int
	var slowest time.Duration
	var firstBad error
	for o := range outcomes {
		total++
		slowest = max(slowest, o.took)
		switch {
		case o.err == nil:
			ok++
			if o.idempotent {
				idemOK++
			}
			if o.got != o.id {
				wrong++
			}
			if !ran[o.id] {
				neverRan++
			}
		case o.idempotent:
			idemFail++
			if firstBad == nil {
				firstBad = o.err
			}
		case errors.Is(o.err, snakepit.ErrWorkerCrashed):
			crashed++
		default:
			otherFail++
			if firstBad == nil {
				firstBad = o.err
			}
		}
	}
	s := app.Stats().Pool
	// A kill that landed before the handshake ends a lifetime with a
	// *StartupError, counted as snakepit.RestartStartup.
	t.Logf("chaos %s: %d kills (%d of them during a worker's start-up); %d calls: %d ok (%d idempotent), %d non-idempotent crashed, %d idempotent failed, %d other failures; slowest call %s; back to %d ready %s after the chaos; restarts %d, retries %d, given up %d",
		dur, kills, s.RestartReasons[snakepit.RestartStartup], total, ok, idemOK, crashed, idemFail, otherFail, slowest.Round(time.Millisecond), workers, healed.Round(time.Millisecond), s.Restarts, s.Retries, len(s.GivenUp))
	if idemFail > 0 || otherFail > 0 {
		t.Errorf("%d idempotent calls failed, %d calls failed with something other than ErrWorkerCrashed; first: %v", idemFail, otherFail, firstBad)
	}
	if neverRan > 0 || wrong > 0 {
		t.Errorf("%d calls succeeded but never ran, %d got another call's result", neverRan, wrong)
	}
	if kills < int(dur/time.Second) {
		t.Errorf("only %d kills in %s: the chaos did not happen", kills, dur)
	}
	if ok == 0 {
		t.Error("no call succeeded")
	}
}

// signalIfOurs signals p only if it still is the process of this run we
// listed (run id + start time); a process that ended meanwhile is skipped.
func signalIfOurs(app *snakepit.App, p proc.Process, sig syscall.Signal) bool {
	st, err := proc.ReadStat(p.PID)
	if err != nil || st.StartTime != p.StartTime || !proc.CarriesRunID(p.PID, app.RunID()) {
		return false
	}
	return syscall.Kill(p.PID, sig) == nil
}
