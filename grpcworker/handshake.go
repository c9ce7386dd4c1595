package grpcworker

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// HandshakePrefix starts the single stdout line a worker prints once its gRPC
// server listens: "SNAKEPIT_READY <protocol> <network> <address>".
const HandshakePrefix = "SNAKEPIT_READY"

// ProtocolVersion is the handshake protocol this host speaks.
const ProtocolVersion = 1

// Handshake is a parsed ready line.
type Handshake struct {
	Protocol int
	Network  string // "tcp" or "unix"
	Address  string // host:port for tcp, a path for unix
}

// Target is the gRPC dial target for the worker's server.
func (h Handshake) Target() string {
	if h.Network == "unix" {
		return "unix:" + h.Address
	}
	return h.Address
}

// ParseHandshake parses one stdout line. It accepts only loopback TCP
// addresses or absolute unix socket paths: a worker claiming to listen
// anywhere else is refused rather than dialled.
func ParseHandshake(line string) (Handshake, error) {
	fields := strings.Fields(strings.TrimSpace(line))
	if len(fields) != 4 || fields[0] != HandshakePrefix {
		return Handshake{}, fmt.Errorf("not a handshake line (want %q): %q", HandshakePrefix+" 1 tcp 127.0.0.1:PORT", truncate(line, 120))
	}
	v, err := strconv.Atoi(fields[1])
	if err != nil || v != ProtocolVersion {
		return Handshake{}, fmt.Errorf("handshake protocol %q is not supported (this host speaks %d); the snakepit_bridge Python package and the Go module are out of step", fields[1], ProtocolVersion)
	}
	h := Handshake{Protocol: v, Network: fields[2], Address: fields[3]}
	switch h.Network {
	case "tcp":
		host, port, err := net.SplitHostPort(h.Address)
		if err != nil {
			return Handshake{}, fmt.Errorf("handshake address %q: %v", h.Address, err)
		}
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return Handshake{}, fmt.Errorf("handshake address %q is not a loopback IP; workers must listen on loopback only", h.Address)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return Handshake{}, fmt.Errorf("handshake port %q is not a valid port", port)
		}
	case "unix":
		if !strings.HasPrefix(h.Address, "/") {
			return Handshake{}, fmt.Errorf("handshake unix socket path %q must be absolute", h.Address)
		}
	default:
		return Handshake{}, fmt.Errorf("handshake network %q is not supported (tcp or unix)", h.Network)
	}
	return h, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
