package main

import (
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/discovery"
	"github.com/snakepit-go/snakepit/remote"
)

// agentFlags join remote agents (`snakepit serve` elsewhere) to the pool of
// `run` and `exec`.
type agentFlags struct {
	agents    string
	tokenFile string
	ca        string
	cert      string
	key       string
	name      string
	interval  time.Duration
}

func (a *agentFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.agents, "agents", "", "join remote agents: `dns:NAME:PORT` (a headless Service, re-resolved) or HOST:PORT[,HOST:PORT...]; without --workers the pool is remote only")
	fs.StringVar(&a.tokenFile, "agent-token-file", "", "file holding the agents' token (default: $"+remote.EnvToken+")")
	fs.StringVar(&a.ca, "agent-tls-ca", "", "PEM CA that signed the agents' certificates: connect with TLS")
	fs.StringVar(&a.cert, "agent-tls-cert", "", "PEM client certificate for agents that require one (with --agent-tls-key)")
	fs.StringVar(&a.key, "agent-tls-key", "", "PEM private key of --agent-tls-cert")
	fs.StringVar(&a.name, "agent-tls-server-name", "", "name every agent's certificate must carry (default: the host part of the address dialed; set it with dns: discovery, which dials pod IPs)")
	fs.DurationVar(&a.interval, "discovery-interval", discovery.DefaultInterval, "how often --agents is looked up again")
}

// apply sets cfg's discovery from the flags; workersSet says whether
// --workers was given (otherwise an --agents pool has no local workers).
// The token and TLS flags apply to every pool's agents (--agents, and
// agents= of --pool and of a --pools file).
func (a *agentFlags) apply(cfg *snakepit.Config, workersSet bool) error {
	cfg.Remote.TokenFile = a.tokenFile
	if a.ca != "" || a.cert != "" || a.key != "" || a.name != "" {
		var err error
		if cfg.Remote.TLS, err = remote.LoadClientTLS(a.ca, a.cert, a.key, a.name); err != nil {
			return err
		}
	}
	if a.agents == "" {
		return nil
	}
	src, err := parseAgents(a.agents)
	if err != nil {
		return err
	}
	cfg.Discovery, cfg.DiscoveryInterval = src, a.interval
	if !workersSet {
		cfg.Workers = 0
	}
	return nil
}

// addAgents adds the agents of one agents= value (a --pool key or a
// --pools file's "agents") to a named pool's Discovery: HOST:PORT or
// dns:NAME:PORT, as --agents takes; repeated, their endpoints add up.
func addAgents(pc *snakepit.PoolConfig, v string) error {
	src, err := parseAgents(v)
	if err != nil {
		return err
	}
	old, okOld := pc.Discovery.(discovery.Static)
	add, okAdd := src.(discovery.Static)
	switch {
	case pc.Discovery == nil:
		pc.Discovery = src
	case okOld && okAdd:
		pc.Discovery = append(old, add...)
	default:
		return fmt.Errorf("pool %q: agents=dns:... names the pool's only agent source; give either one dns: name or HOST:PORT endpoints", pc.Name)
	}
	return nil
}

func parseAgents(s string) (discovery.Source, error) {
	if rest, ok := strings.CutPrefix(s, "dns:"); ok {
		host, port, err := net.SplitHostPort(rest)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || host == "" {
			return nil, fmt.Errorf("--agents %q: want dns:NAME:PORT, e.g. dns:snakepit-agent.default.svc.cluster.local:7070", s)
		}
		return discovery.DNS{Name: host, Port: n}, nil
	}
	var eps discovery.Static
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if _, _, err := net.SplitHostPort(e); err != nil {
			return nil, fmt.Errorf("--agents: %q is not HOST:PORT: %v", e, err)
		}
		eps = append(eps, e)
	}
	return eps, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
