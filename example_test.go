package snakepit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/worker"
	"github.com/snakepit-go/snakepit/worker/fake"
)

// exampleConfig runs in-process fake workers (no Python needed) on a
// throw-away registry; with Python you would set Adapter and PythonPath
// instead of WorkerFactory.
func exampleConfig(dir string) snakepit.Config {
	greet := func(_ context.Context, c *worker.Call) (*worker.Result, error) {
		var a struct{ Name string }
		_ = json.Unmarshal(c.Args, &a)
		return &worker.Result{JSON: json.RawMessage(fmt.Sprintf(`{"message":"hello, %s","session":%q}`, a.Name, c.SessionID))}, nil
	}
	count := func(ctx context.Context, c *worker.Call, yield func(worker.Chunk) error) error {
		for i := 1; i <= 3; i++ {
			if err := yield(worker.Chunk{JSON: json.RawMessage(fmt.Sprint(i))}); err != nil {
				return err
			}
		}
		return nil
	}
	return snakepit.Config{
		Workers:       2,
		RegistryPath:  filepath.Join(dir, "registry.db"),
		WorkerFactory: &fake.Factory{Options: []fake.Option{fake.WithTool("greet", greet), fake.WithStreamTool("count", count)}},
	}
}

// startExample starts an App of fake workers; stop it with the returned func.
func startExample() (*snakepit.App, func()) {
	dir, _ := os.MkdirTemp("", "snakepit-example-")
	app, err := snakepit.New(exampleConfig(dir))
	if err == nil {
		err = app.Start(context.Background())
	}
	if err != nil {
		panic(err)
	}
	return app, func() { _, _ = app.Stop(context.Background()); _ = os.RemoveAll(dir) }
}

func Example() {
	dir, _ := os.MkdirTemp("", "snakepit-example-")
	defer os.RemoveAll(dir)
	app, err := snakepit.New(exampleConfig(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer app.Stop(ctx)

	type greeting struct{ Message string }
	g, err := snakepit.Decode[greeting](app.Execute(ctx, "greet", map[string]any{"name": "ada"}))
	fmt.Println(g.Message, err)
	// Output: hello, ada <nil>
}

func ExampleApp_ExecuteStream() {
	app, stop := startExample()
	defer stop()
	ctx := context.Background()
	for chunk, err := range app.ExecuteStream(ctx, "count", nil) {
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Println(string(chunk.JSON))
	}
	// Output:
	// 1
	// 2
	// 3
}

func ExampleWithSession() {
	app, stop := startExample()
	defer stop()
	ctx := context.Background()
	// The worker sees the session id; the pool prefers the worker that
	// served the session last ("strict-queue" waits for it).
	res, err := app.Execute(ctx, "greet", map[string]any{"name": "bob"},
		snakepit.WithSession("user-42"), snakepit.WithAffinity(snakepit.AffinityStrictQueue))
	fmt.Println(string(res.JSON), err)
	// Output: {"message":"hello, bob","session":"user-42"} <nil>
}

func ExampleApp_RegisterHostTool() {
	dir, _ := os.MkdirTemp("", "snakepit-example-")
	defer os.RemoveAll(dir)
	app, _ := snakepit.New(exampleConfig(dir))
	// Python tools call it as ctx.call_host_tool("lookup", key="k").
	err := app.RegisterHostTool("lookup", func(_ context.Context, args json.RawMessage) (any, error) {
		var a struct{ Key string }
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		return map[string]string{"value": "v-" + a.Key}, nil
	}, snakepit.ToolSpec{Name: "lookup", Description: "Look a key up in the Go service"})
	fmt.Println(err)
	// Output: <nil>
}

// An App is a suture.Service: add it to your own tree, next to your own
// services. Cancelling the tree's context performs the App's ordered stop;
// give the parent a Timeout above Config.StopTimeout.
func ExampleApp_Serve() {
	dir, _ := os.MkdirTemp("", "snakepit-example-")
	defer os.RemoveAll(dir)
	app, _ := snakepit.New(exampleConfig(dir))
	root := suture.New("my-service", suture.Spec{Timeout: snakepit.DefaultStopTimeout + 2*time.Second})
	root.Add(app)
	ctx, cancel := context.WithCancel(context.Background())
	done := root.ServeBackground(ctx)
	if err := app.WaitReady(ctx); err != nil {
		fmt.Println(err)
	}
	_, err := app.Execute(ctx, "greet", map[string]any{"name": "eve"})
	fmt.Println(err)
	cancel()
	<-done
	// Output: <nil>
}
