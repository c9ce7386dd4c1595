package grpcworker

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// handshakePrefix starts the single stdout line a worker prints once its gRPC
// server listens: "SNAKEPIT_READY <protocol> <network> <address>
// [capacity=<n>] [prefetch=<n>]". The capacity field is there only when the
// worker runs fewer calls at once than the host asked for (an adapter that
// declared itself not thread-safe); the host then sends it no more. The
// prefetch field says how many calls beyond that the worker holds in order
// for its next free thread (worker.Info.Prefetch); without it, none.
const handshakePrefix = "SNAKEPIT_READY"

// envHandshakePrefetch tells the worker that this host reads the prefetch
// field; without it the worker leaves the field out.
const envHandshakePrefetch = "SNAKEPIT_HANDSHAKE_PREFETCH"

// protocolVersion is the handshake protocol this host speaks.
const protocolVersion = 1

// handshakeLine is a parsed ready line.
type handshakeLine struct {
	Protocol int
	Network  string // "tcp" or "unix"
	Address  string // host:port for tcp, a path for unix
	Capacity int    // 0: as the host asked (--max-workers)
	Prefetch int    // calls it holds beyond its capacity
}

// Target is the gRPC dial target for the worker's server.
func (h handshakeLine) Target() string {
	if h.Network == "unix" {
		return "unix:" + h.Address
	}
	return h.Address
}

// parseHandshake parses one stdout line. It accepts only loopback TCP
// addresses or absolute unix socket paths: a worker claiming to listen
// anywhere else is refused rather than dialled.
func parseHandshake(line string) (handshakeLine, error) {
	fields := strings.Fields(strings.TrimSpace(line))
	if len(fields) < 4 || len(fields) > 6 || fields[0] != handshakePrefix {
		return handshakeLine{}, fmt.Errorf("not a handshake line (want %q): %q", handshakePrefix+" 1 tcp 127.0.0.1:PORT", truncate(line, 120))
	}
	v, err := strconv.Atoi(fields[1])
	if err != nil || v != protocolVersion {
		return handshakeLine{}, fmt.Errorf("handshake protocol %q is not supported (this host speaks %d); the snakepit_bridge Python package and the Go module are out of step", fields[1], protocolVersion)
	}
	h := handshakeLine{Protocol: v, Network: fields[2], Address: fields[3]}
	for _, f := range fields[4:] {
		key, val, _ := strings.Cut(f, "=")
		n, err := strconv.Atoi(val)
		switch {
		case key == "capacity" && h.Capacity == 0 && err == nil && n >= 1:
			h.Capacity = n
		case key == "prefetch" && h.Prefetch == 0 && err == nil && n >= 1:
			h.Prefetch = n
		default:
			return handshakeLine{}, fmt.Errorf("handshake field %q: want capacity=<n> or prefetch=<n>, n >= 1, each at most once", truncate(f, 40))
		}
	}
	switch h.Network {
	case "tcp":
		host, port, err := net.SplitHostPort(h.Address)
		if err != nil {
			return handshakeLine{}, fmt.Errorf("handshake address %q: %v", h.Address, err)
		}
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return handshakeLine{}, fmt.Errorf("handshake address %q is not a loopback IP; workers must listen on loopback only", h.Address)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return handshakeLine{}, fmt.Errorf("handshake port %q is not a valid port", port)
		}
	case "unix":
		if !strings.HasPrefix(h.Address, "/") {
			return handshakeLine{}, fmt.Errorf("handshake unix socket path %q must be absolute", h.Address)
		}
	default:
		return handshakeLine{}, fmt.Errorf("handshake network %q is not supported (tcp or unix)", h.Network)
	}
	return h, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
