package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snakepit-go/snakepit/bridge/pb"
	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// maxUnixPath is sun_path's capacity on Linux minus its NUL terminator; past it
// bind fails with a bare EINVAL, so it is checked up front to say what to do.
const maxUnixPath = 107

// Server is the host side of the bridge. Create it with New, run it with
// Serve (usually under a suture supervisor). All methods are safe for
// concurrent use, before, during and after Serve.
type Server struct {
	opts      Options
	log       *slog.Logger
	sessions  *Sessions
	stopGrace time.Duration

	toolsMu   sync.RWMutex
	hostTools map[string]hostTool

	registered registry

	hbMu       sync.Mutex
	heartbeats map[string]time.Time

	serving atomic.Bool

	mu       sync.Mutex
	ready    chan struct{} // replaced after an ordered stop (see Ready)
	isReady  bool
	addr     string // what Addr reports
	tcpAddr  string // last TCP listen address, reused on restart
	sockPath string // last unix socket path, reused on restart
	sockDir  string // directory holding sockPath
	ownDir   bool   // whether sockDir was created by us (and is removed by us)
}

// New checks opts, applies defaults and returns a Server that is not yet
// listening. Errors are *OptionsError (errors.Is ErrInvalidOptions).
func New(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:       opts,
		log:        opts.Logger.With("component", "bridge"),
		stopGrace:  opts.StopGrace,
		hostTools:  map[string]hostTool{},
		heartbeats: map[string]time.Time{},
		ready:      make(chan struct{}),
	}
	s.sessions = newSessions(opts.Now, opts.SessionTTL, opts.MaxSessions, s.registered.dropSessions)
	return s, nil
}

// Sessions returns the server's session store.
func (s *Server) Sessions() *Sessions { return s.sessions }

// Ready is closed once Serve is listening; Addr is valid from then on. It
// is not reopened across restarts after a failure (the address is kept
// whenever it can be), but an ordered stop (Serve's ctx ended) replaces
// it, so the next Serve — an App served again — reports its own
// readiness. If Serve fails before it listens, Ready stays open: wait on
// it together with Serve's error.
func (s *Server) Ready() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// Addr is the gRPC target workers dial: "127.0.0.1:PORT" or
// "unix:/abs/path.sock". It is "" until Ready is closed, and keeps the last
// address after Serve returns.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// String names the service in suture's logs.
func (s *Server) String() string {
	if a := s.Addr(); a != "" {
		return "bridge(" + a + ")"
	}
	return "bridge"
}

// lastHeartbeat returns when the worker last sent a Heartbeat, by Options.Now.
func (s *Server) lastHeartbeat(workerID string) (time.Time, bool) {
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	t, ok := s.heartbeats[workerID]
	return t, ok
}

// registeredTools returns the tools the worker registered (under any of its
// sessions, or worker-wide), one spec per name, sorted by name.
func (s *Server) registeredTools(workerID string) []worker.ToolSpec {
	return s.registered.tools(workerID)
}

// ForgetWorker drops the worker's tool registrations and heartbeat record.
// Call it when a worker lifetime ends (worker.Events.Exited is the natural
// place), so that a restarted worker starts from a clean slate and ids of
// removed workers do not accumulate.
func (s *Server) ForgetWorker(workerID string) {
	s.registered.dropWorker(workerID)
	s.hbMu.Lock()
	delete(s.heartbeats, workerID)
	s.hbMu.Unlock()
}

// Serve listens, serves HostService and sweeps expired sessions until ctx
// ends, then stops (see the package doc) and returns nil. It returns an error
// if it cannot listen or the listener fails; under suture it is then
// restarted, and tries to rebind the address workers already know.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errAlreadyServing
	}
	defer s.serving.Store(false)

	lis, addr, err := s.listen()
	if err != nil {
		return err
	}
	defer s.removeSocket()

	// The Guard checks the token from a call's headers, before its body is
	// read, and bounds concurrent calls per connection. No bound across
	// connections: only the run's workers hold the token, one connection
	// each, and a host call refused for a global count would fail a tool.
	opts := append(auth.Guard{Token: s.opts.Token, Streams: -1}.ServerOptions(),
		grpc.MaxRecvMsgSize(s.opts.MaxMessageBytes),
		grpc.MaxSendMsgSize(s.opts.MaxMessageBytes),
		// Tolerate clients that enable keepalive pings: grpc's default policy
		// answers pings more often than every 5 minutes with GOAWAY, which
		// would drop a worker's connection for being careful.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	gs := grpc.NewServer(opts...)
	pb.RegisterHostServiceServer(gs, &hostService{s: s})

	s.mu.Lock()
	s.addr = addr
	if !s.isReady {
		s.isReady = true
		close(s.ready)
	}
	s.mu.Unlock()
	s.log.Info("bridge listening", "addr", addr)

	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()

	sweepCtx, stopSweep := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		s.sweepLoop(sweepCtx)
	}()
	defer func() {
		stopSweep()
		<-swept
	}()

	select {
	case <-ctx.Done():
		s.shutdown(gs)
		<-served // nil after Stop/GracefulStop
		s.mu.Lock()
		s.ready, s.isReady = make(chan struct{}), false
		s.mu.Unlock()
		s.log.Info("bridge stopped", "addr", addr)
		return nil
	case err := <-served:
		s.shutdown(gs)
		return fmt.Errorf("snakepit: bridge stopped serving on %s: %w", addr, err)
	}
}

// shutdown lets in-flight calls finish for stopGrace, then cancels them and
// waits stopGrace more. A host tool that ignores its ctx is abandoned (and
// logged) rather than allowed to hang the whole application's stop.
func (s *Server) shutdown(gs *grpc.Server) {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(s.stopGrace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	s.log.Warn("bridge: calls still running after the grace period; cancelling them", "grace", s.stopGrace)
	// Stop closes every connection, which cancels the handlers' contexts;
	// GracefulStop then returns once the handlers have returned.
	gs.Stop()
	t.Reset(s.stopGrace)
	select {
	case <-done:
	case <-t.C:
		s.log.Error("bridge: a host tool ignored cancellation and is still running; stopping without it — make host tools return when their ctx is done")
	}
}

func (s *Server) sweepLoop(ctx context.Context) {
	tick := time.NewTicker(s.opts.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if n := s.sessions.sweep(s.opts.Now()); n > 0 {
				s.log.Debug("swept expired sessions", "count", n)
			}
		}
	}
}

func (s *Server) listen() (net.Listener, string, error) {
	if s.opts.Network == "unix" {
		return s.listenUnix()
	}
	s.mu.Lock()
	prev := s.tcpAddr
	s.mu.Unlock()
	// tcp4 and a literal 127.0.0.1: "localhost" could resolve to ::1 or, with
	// an odd hosts file, to a routable address.
	if prev != "" {
		lis, err := net.Listen("tcp4", prev)
		if err == nil {
			return lis, prev, nil
		}
		s.log.Warn("bridge: cannot rebind the previous address; workers started before this restart cannot reach the host until they are restarted", "addr", prev, "err", err)
	}
	lis, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("snakepit: bridge cannot listen on 127.0.0.1: %w (is the loopback interface up?)", err)
	}
	addr := lis.Addr().String()
	s.mu.Lock()
	s.tcpAddr = addr
	s.mu.Unlock()
	return lis, addr, nil
}

func (s *Server) listenUnix() (net.Listener, string, error) {
	s.mu.Lock()
	prevPath, prevDir, prevOwn := s.sockPath, s.sockDir, s.ownDir
	s.mu.Unlock()
	if prevPath != "" {
		lis, err := s.rebindUnix(prevPath, prevDir, prevOwn)
		if err == nil {
			return lis, "unix:" + prevPath, nil
		}
		s.log.Warn("bridge: cannot rebind the previous socket; workers started before this restart cannot reach the host until they are restarted", "path", prevPath, "err", err)
	}

	dir, own, err := s.socketDir()
	if err != nil {
		return nil, "", err
	}
	name := "bridge.sock"
	if !own {
		// A shared directory may hold the sockets of other Servers.
		var b [4]byte
		_, _ = rand.Read(b[:])
		name = fmt.Sprintf("snakepit-bridge-%d-%s.sock", os.Getpid(), hex.EncodeToString(b[:]))
	}
	path := filepath.Join(dir, name)
	lis, err := listenUnixAt(path)
	if err != nil {
		if own {
			_ = os.Remove(dir)
		}
		return nil, "", err
	}
	s.mu.Lock()
	s.sockPath, s.sockDir, s.ownDir = path, dir, own
	s.mu.Unlock()
	return lis, "unix:" + path, nil
}

// rebindUnix recreates the previous socket. A directory of ours that was
// removed is recreated with Mkdir, which fails if someone else created that
// path in the meantime — then the caller picks a fresh directory instead of
// trusting one it does not own.
func (s *Server) rebindUnix(path, dir string, own bool) (net.Listener, error) {
	if own {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, err
		}
	}
	lis, err := listenUnixAt(path)
	if err != nil && own {
		_ = os.Remove(dir)
	}
	return lis, err
}

// socketDir returns the directory for the socket and whether this Server
// created it (and must remove it).
func (s *Server) socketDir() (string, bool, error) {
	if s.opts.SocketDir == "" {
		dir, err := os.MkdirTemp("", "snakepit-bridge-")
		if err != nil {
			return "", false, fmt.Errorf("snakepit: bridge cannot create a socket directory in %s: %w; set Options.SocketDir to a writable private directory", os.TempDir(), err)
		}
		// Made absolute so that Addr is "unix:/abs/path", which grpc-go and
		// grpcio both read as an absolute path regardless of their cwd.
		abs, err := filepath.Abs(dir)
		if err != nil {
			_ = os.Remove(dir)
			return "", false, err
		}
		return abs, true, nil
	}
	dir, err := filepath.Abs(s.opts.SocketDir)
	if err != nil {
		return "", false, fmt.Errorf("snakepit: bridge Options.SocketDir %q: %w", s.opts.SocketDir, err)
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", false, fmt.Errorf("snakepit: bridge cannot create Options.SocketDir %s: %w", dir, err)
		}
		return dir, true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("snakepit: bridge Options.SocketDir %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return "", false, fmt.Errorf("snakepit: bridge Options.SocketDir %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", false, fmt.Errorf("snakepit: bridge Options.SocketDir %s has mode %#o, so other users could reach or replace the socket; use a directory with mode 0700, or leave SocketDir empty for a private temporary one", dir, perm)
	}
	return dir, false, nil
}

func listenUnixAt(path string) (net.Listener, error) {
	if len(path) > maxUnixPath {
		return nil, fmt.Errorf("snakepit: bridge socket path %s is %d bytes, longer than the %d a unix socket allows; use a shorter Options.SocketDir", path, len(path), maxUnixPath)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("snakepit: bridge cannot listen on unix socket %s: %w", path, err)
	}
	// The directory already keeps other users out; this also covers a
	// SocketDir whose mode is loosened later.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("snakepit: bridge cannot restrict unix socket %s: %w", path, err)
	}
	return lis, nil
}

// removeSocket deletes the socket file and the directory if it is ours. The
// listener normally unlinks the file itself; this covers the paths where it
// does not (e.g. a listener error).
func (s *Server) removeSocket() {
	s.mu.Lock()
	path, dir, own := s.sockPath, s.sockDir, s.ownDir
	s.mu.Unlock()
	if path == "" {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("bridge: cannot remove socket", "path", path, "err", err)
	}
	if own {
		// os.Remove, not RemoveAll: only an empty directory is ours to delete.
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("bridge: cannot remove socket directory", "dir", dir, "err", err)
		}
	}
}
