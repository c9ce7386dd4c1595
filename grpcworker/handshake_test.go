package grpcworker

import (
	"strings"
	"testing"
)

func TestParseHandshake(t *testing.T) {
	good := []struct {
		line, target string
	}{
		{"SNAKEPIT_READY 1 tcp 127.0.0.1:43817", "127.0.0.1:43817"},
		{"SNAKEPIT_READY 1 tcp 127.0.0.1:43817\r\n", "127.0.0.1:43817"},
		{"SNAKEPIT_READY 1 tcp [::1]:5000", "[::1]:5000"},
		{"SNAKEPIT_READY 1 unix /tmp/x/w.sock", "unix:/tmp/x/w.sock"},
	}
	if h, err := parseHandshake("SNAKEPIT_READY 1 tcp 127.0.0.1:43817 capacity=1"); err != nil || h.Capacity != 1 {
		t.Fatalf("capacity field: %+v, %v; want Capacity 1", h, err)
	}
	if h, err := parseHandshake("SNAKEPIT_READY 1 tcp 127.0.0.1:43817 capacity=1 prefetch=1"); err != nil || h.Capacity != 1 || h.Prefetch != 1 {
		t.Fatalf("capacity and prefetch fields: %+v, %v; want Capacity 1, Prefetch 1", h, err)
	}
	if h, err := parseHandshake("SNAKEPIT_READY 1 tcp 127.0.0.1:43817 prefetch=8"); err != nil || h.Capacity != 0 || h.Prefetch != 8 {
		t.Fatalf("prefetch field: %+v, %v; want Capacity 0, Prefetch 8", h, err)
	}
	for _, g := range good {
		h, err := parseHandshake(g.line)
		if err != nil {
			t.Fatalf("%q: %v", g.line, err)
		}
		if h.Target() != g.target {
			t.Fatalf("%q: target %q, want %q", g.line, h.Target(), g.target)
		}
	}
	bad := map[string]string{
		"":                                                           "not a handshake",
		"hello":                                                      "not a handshake",
		"SNAKEPIT_READY 2 tcp 127.0.0.1:1":                           "not supported",
		"SNAKEPIT_READY 1 tcp 10.0.0.1:80":                           "loopback",
		"SNAKEPIT_READY 1 tcp 0.0.0.0:80":                            "loopback",
		"SNAKEPIT_READY 1 tcp 127.0.0.1:0":                           "valid port",
		"SNAKEPIT_READY 1 tcp 127.0.0.1:99999":                       "valid port",
		"SNAKEPIT_READY 1 udp 127.0.0.1:80":                          "network",
		"SNAKEPIT_READY 1 unix rel/path":                             "absolute",
		"SNAKEPIT_READY 1 tcp localhost":                             "handshake address",
		"SNAKEPIT_READY 1 tcp 127.0.0.1:1 capacity=0":                "capacity=<n>",
		"SNAKEPIT_READY 1 tcp 127.0.0.1:1 threads=2":                 "capacity=<n>",
		"SNAKEPIT_READY 1 tcp 127.0.0.1:1 prefetch=-1":               "prefetch=<n>",
		"SNAKEPIT_READY 1 tcp 127.0.0.1:1 prefetch=2 prefetch=2":     "at most once",
		"SNAKEPIT_READY 1 tcp 127.0.0.1:1 capacity=1 prefetch=1 x=1": "not a handshake",
	}
	for line, want := range bad {
		_, err := parseHandshake(line)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: err %v, want it to mention %q", line, err, want)
		}
	}
}

func FuzzParseHandshake(f *testing.F) {
	f.Add("SNAKEPIT_READY 1 tcp 127.0.0.1:43817")
	f.Add("SNAKEPIT_READY 1 unix /a/b")
	f.Add("SNAKEPIT_READY 1 tcp [::1]:1")
	f.Fuzz(func(t *testing.T, line string) {
		h, err := parseHandshake(line)
		if err != nil {
			return
		}
		if h.Network != "tcp" && h.Network != "unix" {
			t.Fatalf("accepted network %q", h.Network)
		}
		if h.Target() == "" {
			t.Fatal("empty target accepted")
		}
	})
}
