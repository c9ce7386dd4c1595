// Command embedded is a runnable example of snakepit inside a user's own
// supervision tree: one suture supervisor runs an HTTP service and the
// snakepit App side by side; the HTTP handler calls a Python tool of the
// user's own adapter (./python/greeter.py). SIGTERM or Ctrl-C cancels the
// tree's context, which stops the App in order — workers drained, stopped,
// reaped, cleanup last — before the program exits.
//
//	go run ./examples/embedded -listen 127.0.0.1:8080
//	curl '127.0.0.1:8080/greet?name=ada'
//
// It prints "listening <addr> run_id=<id>" once the pool is ready and
// "stopped" after the ordered stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/snakepit-go/snakepit"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "HTTP address (loopback)")
	dir := flag.String("adapters", adapterDir(), "directory holding greeter.py")
	flag.Parse()
	if err := run(*listen, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "embedded:", err)
		os.Exit(1)
	}
}

// adapterDir is where the example's Python code lives, next to this file.
func adapterDir() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		return filepath.Join(filepath.Dir(file), "python")
	}
	return "python"
}

func run(listen, dir string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	app, err := snakepit.New(snakepit.Config{
		Workers:    2,
		Adapter:    "greeter.Greeter",
		PythonPath: []string{dir},
		Logger:     log,
	})
	if err != nil {
		return err // e.g. no Python with grpcio: the error says how to fix it
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	// The parent's stop timeout must exceed the App's own stop budget.
	root := suture.New("example", suture.Spec{EventHook: func(e suture.Event) { log.Warn(e.String()) }, Timeout: 30 * time.Second})
	root.Add(app)
	root.Add(&httpService{ln: ln, app: app})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	done := root.ServeBackground(ctx)
	// WaitReady returns the start error (with the Python traceback) as soon
	// as the App cannot start; the App has already stopped its processes.
	// The parent would restart it after its backoff: this program prefers
	// to fail loud, so it stops the tree and exits non-zero.
	if err := app.WaitReady(ctx); err != nil {
		stop()
		<-done
		return err
	}
	fmt.Println("listening " + ln.Addr().String() + " run_id=" + app.RunID())
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	fmt.Println("stopped")
	return nil
}

// httpService is the user's own service in the same tree.
type httpService struct {
	ln  net.Listener
	app *snakepit.App
}

func (h *httpService) String() string { return "http" }

func (h *httpService) Serve(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/greet", func(w http.ResponseWriter, r *http.Request) {
		res, err := h.app.Execute(r.Context(), "greet", map[string]any{"name": r.URL.Query().Get("name")})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(res.JSON)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(h.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
