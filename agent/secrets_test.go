package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/agent"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/internal/testutil"
	"github.com/snakepit-go/snakepit/remote"
)

// envAdapter's tool returns what env(1), started by the tool, prints: the
// environment anything a tool starts inherits.
const envAdapter = `import subprocess

from snakepit_bridge import BaseAdapter, tool


class EnvAdapter(BaseAdapter):
    @tool(description="env(1) as a process this tool starts sees it")
    def child_env(self) -> str:
        return subprocess.run(["env"], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
`

// childEnv runs child_env through call and returns the variables' names.
func childEnv(t *testing.T, call func(context.Context, string, any, ...snakepit.CallOption) (*snakepit.Result, error)) (map[string]bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := call(ctx, "child_env", nil)
	if err != nil {
		t.Fatalf("child_env: %v", err)
	}
	var out string
	if err := json.Unmarshal(res.JSON, &out); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if k, _, ok := strings.Cut(line, "="); ok {
			names[k] = true
		}
	}
	if !names["SNAKEPIT_RUN_ID"] {
		t.Fatalf("the child's environment has no SNAKEPIT_RUN_ID; is this env(1)'s output? %d bytes", len(out))
	}
	return names, out
}

// No snakepit secret reaches a Python worker's children: not the agent
// token in the host's environment (whether the worker started before or
// after the agent loaded it), not the run's token.
func TestNoSecretInWorkersEnvironment(t *testing.T) {
	const secret = "agent-secret-from-the-environment-0123"
	t.Setenv(agent.EnvToken, secret)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "env_adapter.py"), []byte(envAdapter), 0o600); err != nil {
		t.Fatal(err)
	}
	app, err := snakepit.New(snakepit.Config{Workers: 1, Adapter: "env_adapter.EnvAdapter", PythonPath: []string{dir},
		RegistryPath: filepath.Join(t.TempDir(), "agent.db"), Logger: testutil.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = app.Stop(context.Background()) })

	check := func(where string, names map[string]bool, out string) {
		t.Helper()
		for _, k := range auth.SecretEnv {
			if names[k] {
				t.Errorf("%s: %s is in the environment of a process a tool started", where, k)
			}
		}
		if strings.Contains(out, secret) {
			t.Errorf("%s: the agent token's value is in the environment of a process a tool started", where)
		}
	}
	// The worker started while the token was still in this process's
	// environment: only the worker's environment rule keeps it out.
	names, out := childEnv(t, app.Execute)
	check("worker started before the agent loaded its token", names, out)

	// The agent takes the token out of the environment when it loads it.
	srv := serve(t, app, agent.Options{})
	if _, ok := os.LookupEnv(agent.EnvToken); ok {
		t.Fatalf("$%s is still set after the agent loaded it", agent.EnvToken)
	}
	// A host in the same process still finds it, and its call through the
	// agent runs in the same kind of environment.
	host := hostApp(t, discovery.Static{srv.Addr()}, remote.Options{})
	names, out = childEnv(t, host.Execute)
	check("call through the agent", names, out)
}
