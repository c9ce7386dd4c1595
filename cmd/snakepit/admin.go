package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/snakepit-go/snakepit"
)

const (
	// adminShutdownTimeout bounds the graceful shutdown of the admin
	// listener; connections still open after it are closed.
	adminShutdownTimeout = 5 * time.Second
)

// checkAdminAddr accepts only host:port with a loopback host: the admin
// endpoints have no authentication and /status shows the pool's internals.
func checkAdminAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--admin %q: want HOST:PORT on a loopback address, e.g. 127.0.0.1:9090: %v", addr, err)
	}
	if port == "" {
		return fmt.Errorf("--admin %q: missing port, e.g. 127.0.0.1:9090", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		what := host
		if host == "" {
			what = "every interface"
		}
		return fmt.Errorf("--admin %q: refusing to listen on %s: the admin endpoints are unauthenticated, use a loopback address such as 127.0.0.1:9090 or [::1]:9090", addr, what)
	}
	return nil
}

// listenAdmin validates addr and listens on it, re-checking that what it got
// is a loopback address (localhost could resolve elsewhere).
func listenAdmin(addr string) (net.Listener, error) {
	if err := checkAdminAddr(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--admin: %w", err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		_ = ln.Close()
		return nil, fmt.Errorf("--admin %q: resolved to %s, which is not a loopback address", addr, ln.Addr())
	}
	return ln, nil
}

// adminHandler serves /metrics and, through snakepit.AdminHandler,
// /healthz, /readyz, /status and /status.html for app. /metrics uses a
// private registry: the App's collector, the Go runtime and the process
// collectors, and promhttp's own handler metrics.
func adminHandler(app *snakepit.App, log *slog.Logger) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		snakepit.NewCollector(app),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("admin: registering metrics: %w", err)
		}
	}
	metrics := promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.Handle("/", snakepit.AdminHandler(app, snakepit.AdminOptions{}))
	return mux, nil
}

// adminServer is the admin HTTP listener of "snakepit run --admin".
type adminServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	err  error // Serve's error other than http.ErrServerClosed; read after done
}

// startAdmin listens on the loopback address addr and serves the admin
// endpoints for app there.
func startAdmin(app *snakepit.App, addr string, log *slog.Logger) (*adminServer, error) {
	ln, err := listenAdmin(addr)
	if err != nil {
		return nil, err
	}
	s, err := serveAdmin(app, ln, log)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return s, nil
}

// serveAdmin serves the admin endpoints for app on ln until Shutdown.
func serveAdmin(app *snakepit.App, ln net.Listener, log *slog.Logger) (*adminServer, error) {
	h, err := adminHandler(app, log)
	if err != nil {
		return nil, err
	}
	s := &adminServer{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
			log.Error("admin listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the admin listener is bound to.
func (s *adminServer) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops accepting, waits for the requests in progress up to
// adminShutdownTimeout (or ctx), then closes what is left and waits for
// the server to return.
func (s *adminServer) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, adminShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	if err == nil {
		err = s.err
	}
	return err
}
