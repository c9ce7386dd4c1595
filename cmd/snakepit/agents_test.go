package main

import (
	"flag"
	"io"
	"testing"

	"github.com/snakepit-go/snakepit"
)

// --agent-tls-server-name reaches the TLS configuration of the remote
// workers, alone (system roots) or with a CA.
func TestAgentTLSServerNameFlag(t *testing.T) {
	for _, args := range [][]string{
		{"--agents", "dns:snakepit-agent.default.svc.cluster.local:7070", "--agent-tls-server-name", "snakepit-agent.internal"},
		{"--agents", "127.0.0.1:7070", "--agent-tls-server-name=snakepit-agent.internal"},
	} {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var af agentFlags
		af.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		var cfg snakepit.Config
		if err := af.apply(&cfg, false); err != nil {
			t.Fatal(err)
		}
		if cfg.Remote.TLS == nil || cfg.Remote.TLS.ServerName != "snakepit-agent.internal" {
			t.Fatalf("%v: Remote.TLS = %+v, want ServerName snakepit-agent.internal", args, cfg.Remote.TLS)
		}
	}
}
