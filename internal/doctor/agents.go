package doctor

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/agent/agentpb"
	"github.com/snakepit-go/snakepit/internal/auth"
)

// checkAgents lists the configured agents and asks each to Describe itself
// with the token: that call needs the token, so it proves both reachability
// and authentication (health alone is open without one).
func checkAgents(ctx context.Context, o Options) []Check {
	if o.Agents == nil {
		return []Check{{Name: "agents", Status: Skip, Detail: "no --agents given"}}
	}
	tok, err := auth.Load(o.AgentTokenFile, auth.EnvAgentToken)
	if err != nil {
		return []Check{{Name: "agents", Status: Fail, Detail: "cannot load the agents' token: " + err.Error(),
			Fix: "give --agent-token-file FILE or set $" + auth.EnvAgentToken + " to the token the agents were started with"}}
	}
	lctx, cancel := context.WithTimeout(ctx, o.Timeout)
	eps, err := o.Agents.Endpoints(lctx)
	cancel()
	if err != nil {
		return []Check{{Name: "agents", Status: Fail, Detail: fmt.Sprintf("cannot list the agents (%v): %v", o.Agents, err),
			Fix: "check the --agents value and the DNS name it resolves"}}
	}
	if len(eps) == 0 {
		return []Check{{Name: "agents", Status: Warn, Detail: fmt.Sprintf("%v lists no agent now", o.Agents),
			Fix: "start the agents (snakepit serve) or check that the headless Service has ready pods"}}
	}
	out := make([]Check, 0, len(eps))
	for _, ep := range eps {
		out = append(out, checkAgent(ctx, o, tok, ep))
	}
	return out
}

func checkAgent(ctx context.Context, o Options, tok auth.Token, ep string) Check {
	name := "agent " + ep
	creds := insecure.NewCredentials()
	if o.AgentTLS != nil {
		creds = credentials.NewTLS(o.AgentTLS)
	}
	cc, err := grpc.NewClient(ep, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, auth.ClientOptions(tok)...)...)
	if err != nil {
		return Check{Name: name, Status: Fail, Detail: err.Error(), Fix: "give --agents as HOST:PORT"}
	}
	defer cc.Close()
	cctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	d, err := agentpb.NewAgentServiceClient(cc).Describe(cctx, &agentpb.DescribeRequest{})
	switch {
	case status.Code(err) == codes.Unauthenticated:
		return Check{Name: name, Status: Fail, Detail: "reachable, but it rejected the token",
			Fix: "give the host and the agent the same token (--agent-token-file or $" + auth.EnvAgentToken + ")"}
	case err != nil:
		return Check{Name: name, Status: Fail, Detail: "unreachable: " + err.Error(),
			Fix: "check that `snakepit serve` runs there, listens beyond loopback (--allow-non-loopback) and that both sides use the same TLS settings"}
	}
	return Check{Name: name, Status: Pass, Detail: fmt.Sprintf("reachable with the token: agent %s on %s, capacity %d, %d tool(s)",
		d.GetAgentId(), d.GetHostname(), d.GetCapacity(), len(d.GetTools()))}
}
