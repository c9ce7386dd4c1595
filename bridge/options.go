package bridge

import (
	"log/slog"
	"time"

	"github.com/snakepit-go/snakepit/internal/auth"
	"github.com/snakepit-go/snakepit/worker"
)

// Defaults applied by New to zero-valued Options fields.
const (
	defaultSessionTTL      = time.Hour
	defaultSweepInterval   = 60 * time.Second
	defaultMaxSessions     = 10_000
	defaultMaxMessageBytes = worker.DefaultMaxMessageBytes
	defaultStopGrace       = time.Second
)

// Options configures a Server. Only Token is required.
type Options struct {
	// Token is the run's shared secret; every call must carry it. The App
	// generates one per run and hands it to workers through their
	// environment. Its type keeps it out of every log and formatted value.
	Token auth.Token
	// Network is "tcp" (the default; 127.0.0.1 with a kernel-chosen port) or
	// "unix" (a socket file inside SocketDir).
	Network string
	// SocketDir, for Network "unix", is the directory that holds the socket.
	// It is created with mode 0700 if missing and must not be accessible to
	// other users if it exists (the socket would be reachable by them). Empty:
	// a fresh private directory under os.TempDir(), removed when Serve returns.
	SocketDir string
	// SessionTTL is how long a session may go unused before it expires, when
	// its creator does not choose. Default 1h.
	SessionTTL time.Duration
	// SweepInterval is how often expired sessions are removed. Default 60s.
	// Expired sessions are refused on access even before they are swept.
	SweepInterval time.Duration
	// MaxSessions bounds the number of live sessions. Default 10,000.
	MaxSessions int
	// MaxMessageBytes bounds each request and response. Default 16 MiB.
	MaxMessageBytes int
	// StopGrace is how long the stop waits for in-flight host calls before
	// cancelling them, and again for the cancelled calls to return (so the
	// stop takes at most twice this). Default 1 s: the bridge stops after
	// the workers, so any call still running comes from a worker already gone.
	StopGrace time.Duration
	// Now is the clock for session times; tests inject a fake one. Default time.Now.
	Now func() time.Time
	// Logger receives the bridge's logs. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Token.IsZero() {
		return o, &OptionsError{Field: "Token", Reason: "is empty; every worker call must carry the run's token — generate one (the App does) and give the same value to the workers"}
	}
	switch o.Network {
	case "":
		o.Network = "tcp"
	case "tcp", "unix":
	default:
		return o, &OptionsError{Field: "Network", Reason: `is "` + o.Network + `"; use "tcp" (loopback) or "unix"`}
	}
	if o.SocketDir != "" && o.Network != "unix" {
		return o, &OptionsError{Field: "SocketDir", Reason: `is set but Network is not "unix"; set Network to "unix" or clear SocketDir`}
	}
	for _, f := range []struct {
		name     string
		negative bool
	}{
		{"SessionTTL", o.SessionTTL < 0},
		{"SweepInterval", o.SweepInterval < 0},
		{"MaxSessions", o.MaxSessions < 0},
		{"MaxMessageBytes", o.MaxMessageBytes < 0},
		{"StopGrace", o.StopGrace < 0},
	} {
		if f.negative {
			return o, &OptionsError{Field: f.name, Reason: "is negative; use 0 for the default or a positive value"}
		}
	}
	if o.SessionTTL == 0 {
		o.SessionTTL = defaultSessionTTL
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = defaultSweepInterval
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = defaultMaxSessions
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = defaultMaxMessageBytes
	}
	if o.StopGrace == 0 {
		o.StopGrace = defaultStopGrace
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
