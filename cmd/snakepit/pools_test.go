package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// The example in docs/POOLS.md's companion file reads as documented.
func TestPoolFileExample(t *testing.T) {
	data, err := os.ReadFile("../../docs/pools.example.json")
	if err != nil {
		t.Fatal(err)
	}
	pools, err := parsePoolFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 {
		t.Fatalf("%d pools", len(pools))
	}
	e, tk := pools[0], pools[1]
	if e.Name != "embed" || e.Adapter != "myapp.embed:EmbedAdapter" || e.Python != "/opt/embed-venv/bin/python" ||
		len(e.PythonPath) != 1 || e.Env["MODEL_DIR"] != "/srv/models" || e.Workers != 2 || e.Capacity != 1 ||
		e.RecycleAboveRSS != 2<<30 || e.StartupTimeout != 2*time.Minute || e.QueueTimeout != 30*time.Second || e.MaxMessageBytes != 64<<20 {
		t.Errorf("embed = %+v", e)
	}
	if tk.Name != "tokenize" || tk.Workers != 4 || tk.RecycleAfterRequests != 10000 || tk.MaxQueue != 5000 {
		t.Errorf("tokenize = %+v", tk)
	}
	// What the file says is what New checks: the example is a valid Config.
	cfg := snakepit.Config{Pools: pools, WorkerFactory: &fake.Factory{}, RegistryPath: filepath.Join(t.TempDir(), "r.db")}
	if _, err := snakepit.New(cfg); err != nil {
		t.Fatalf("New with the example pools: %v", err)
	}
}

func TestPoolFileErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{`[]`, `want {"pools": [...]}`},
		{`{"pool": []}`, `want {"pools": [...]}`},
		{`{"pools": [{"workers": 1}]}`, `pools[0]: every pool needs a "name"`},
		{`{"pools": [{"name": "a", "wrokers": 1}]}`, `unknown key "wrokers"`},
		{`{"pools": [{"name": "a", "queueTimeout": 5}]}`, `QueueTimeout: want a duration string`},
		{`{"pools": [{"name": "a", "queueTimeout": "5 parsecs"}]}`, `QueueTimeout: time: unknown unit`},
		{`{"pools": [{"name": "a", "workers": "two"}]}`, `Workers: json`},
		{`{"pools": [{"name": "a", "workerFactory": {}}]}`, `WorkerFactory cannot be set from a file`},
	} {
		if _, err := parsePoolFile([]byte(tc.file)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error containing %q", tc.file, err, tc.want)
		}
	}
}

func TestPoolFlag(t *testing.T) {
	pc, err := parsePoolFlag("embed,adapter=myapp.embed:Adapter,workers=2,capacity=1,python=/usr/bin/python3,pythonpath=/a:/b")
	if err != nil {
		t.Fatal(err)
	}
	if pc.Name != "embed" || pc.Adapter != "myapp.embed:Adapter" || pc.Workers != 2 || pc.Capacity != 1 || pc.Python != "/usr/bin/python3" || len(pc.PythonPath) != 2 {
		t.Fatalf("%+v", pc)
	}
	pc, err = parsePoolFlag("burst,min_workers=1,max_workers=4,idle_timeout=30s")
	if err != nil || pc.MinWorkers != 1 || pc.MaxWorkers != 4 || pc.IdleTimeout != 30*time.Second || pc.Workers != 0 {
		t.Fatalf("elastic keys: %+v, %v", pc, err)
	}
	if pc, err := parsePoolFlag("plain"); err != nil || pc.Name != "plain" {
		t.Fatalf("name only: %+v, %v", pc, err)
	}
	for _, bad := range []string{"a,workers", "a,workers=x", "a,queue=1", "a,idle_timeout=5"} {
		if _, err := parsePoolFlag(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// snakepit run with a named pool beside the default one: both start
// (one worker each, different adapters), the ready line lists the pools,
// and SIGTERM stops every process of both.
func TestRunWithANamedPool(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.db")
	cmd := exec.Command(binary, "run", "--workers", "1", "--registry", reg,
		"--pool", "text,adapter=snakepit_bridge.examples.textstats.TextStatsAdapter,workers=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startKilledAtCleanup(t, cmd)
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	var l string
	select {
	case l = <-line:
	case <-time.After(60 * time.Second):
		t.Fatalf("no ready line; stderr:\n%s", stderr.String())
	}
	m := regexp.MustCompile(`^ready run_id=([a-z0-9-]+) workers=1 pools=default,text$`).FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("ready line = %q; stderr:\n%s", l, stderr.String())
	}
	procs := testutil.RunIDProcesses(t, m[1])
	var named int
	for _, p := range procs {
		if strings.Contains(p.Cmdline, "--worker-id text.w0 ") {
			named++
		}
	}
	if len(procs) != 2 || named != 1 {
		t.Fatalf("processes of the run: %+v; want w0 and text.w0", procs)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("snakepit run exited with %v; stderr:\n%s", err, stderr.String())
	}
	if left := testutil.RunIDProcesses(t, m[1]); len(left) > 0 {
		t.Fatalf("processes left: %+v", left)
	}
}

func TestPoolsFlagErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "pools.json")
	if err := os.WriteFile(bad, []byte(`{"pools": [{"name": "a", "bogus": 1}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCmd(t, "run", "--pools", bad); code != 2 || !strings.Contains(stderr, `unknown key "bogus"`) {
		t.Fatalf("run --pools with a bad file: code %d, stderr %q", code, stderr)
	}
	if _, stderr, code := runCmd(t, "serve", "--pools", bad); code != 2 || !strings.Contains(stderr, `unknown key "bogus"`) {
		t.Fatalf("serve --pools with a bad file: code %d, stderr %q", code, stderr)
	}
	if _, stderr, code := runCmd(t, "serve", "--pool", "a,agents=127.0.0.1:1"); code != 2 || !strings.Contains(stderr, "agents= is for hosts") {
		t.Fatalf("serve --pool with agents=: code %d, stderr %q", code, stderr)
	}
	if _, stderr, code := runCmd(t, "run", "--pool", "a,agents=nohost"); code != 2 || !strings.Contains(stderr, "not HOST:PORT") {
		t.Fatalf("run --pool with a bad agents=: code %d, stderr %q", code, stderr)
	}
}

// agents= of --pool and "agents" of a --pools file feed a named pool from
// agents: endpoints add up; one dns: name is the only source.
func TestPoolAgents(t *testing.T) {
	pc, err := parsePoolFlag("embed,agents=127.0.0.1:7070,agents=127.0.0.2:7070,adapter=m:A")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := pc.Discovery.(discovery.Static); !ok || !slices.Equal(got, discovery.Static{"127.0.0.1:7070", "127.0.0.2:7070"}) {
		t.Fatalf("Discovery = %#v", pc.Discovery)
	}
	if pc, err = parsePoolFlag("embed,agents=dns:agent.svc:7070"); err != nil || pc.Discovery != (discovery.DNS{Name: "agent.svc", Port: 7070}) {
		t.Fatalf("dns agents: %#v, %v", pc.Discovery, err)
	}
	if _, err := parsePoolFlag("embed,agents=dns:agent.svc:7070,agents=127.0.0.1:7070"); err == nil || !strings.Contains(err.Error(), "either one dns: name") {
		t.Fatalf("dns: with endpoints: %v", err)
	}
	pools, err := parsePoolFile([]byte(`{"pools": [{"name": "a", "agents": "127.0.0.1:7070"}, {"name": "b", "agents": ["127.0.0.1:7071", "127.0.0.1:7072"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := pools[0].Discovery, pools[1].Discovery; !reflect.DeepEqual(a, discovery.Static{"127.0.0.1:7070"}) || !reflect.DeepEqual(b, discovery.Static{"127.0.0.1:7071", "127.0.0.1:7072"}) {
		t.Fatalf("file agents: %#v, %#v", a, b)
	}
	if _, err := parsePoolFile([]byte(`{"pools": [{"name": "a", "agents": 7}]}`)); err == nil || !strings.Contains(err.Error(), "agents: want") {
		t.Fatalf("file agents of the wrong type: %v", err)
	}
}

// An elastic pool from a file, in either key style, and the default pool
// made elastic by --min-workers/--max-workers: New takes both.
func TestElasticPoolFlags(t *testing.T) {
	pools, err := parsePoolFile([]byte(`{"pools": [{"name": "a", "minWorkers": 1, "maxWorkers": 3, "idleTimeout": "30s"},
		{"name": "b", "min_workers": 0, "max_workers": 2, "scale_up_after": "50ms"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := pools[0], pools[1]; a.MinWorkers != 1 || a.MaxWorkers != 3 || a.IdleTimeout != 30*time.Second || b.MaxWorkers != 2 || b.ScaleUpAfter != 50*time.Millisecond {
		t.Fatalf("pools = %+v", pools)
	}
	parse := func(args ...string) snakepit.Config {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		var pf poolFlags
		pf.register(fs, 4)
		var ef elasticFlags
		ef.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		cfg := pf.config(io.Discard)
		ef.apply(fs, &cfg)
		cfg.Pools, cfg.WorkerFactory, cfg.RegistryPath = pools, &fake.Factory{}, filepath.Join(t.TempDir(), "r.db")
		return cfg
	}
	cfg := parse("--min-workers", "1", "--max-workers", "3")
	if got := sizeText(&cfg); got != "1..3" {
		t.Errorf("ready line size %q; want 1..3", got)
	}
	app, err := snakepit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][2]int{snakepit.DefaultPool: {1, 3}, "a": {1, 3}, "b": {0, 2}} {
		if s := app.Pool(name).Stats().Scaling; !s.Elastic || s.Min != want[0] || s.Max != want[1] {
			t.Errorf("pool %s: %+v; want elastic %d..%d", name, s, want[0], want[1])
		}
	}
	if cfg := parse("--workers", "2"); sizeText(&cfg) != "2" || cfg.MaxWorkers != 0 {
		t.Errorf("--workers alone: %+v", cfg)
	}
	if _, err := snakepit.New(parse("--workers", "2", "--max-workers", "3")); !errors.Is(err, snakepit.ErrInvalidConfig) || !strings.Contains(err.Error(), "leave Workers 0") {
		t.Errorf("--workers with --max-workers: %v; want ErrInvalidConfig saying to leave Workers 0", err)
	}
}
