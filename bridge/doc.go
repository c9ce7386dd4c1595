// Package bridge is the host side of the snakepit protocol: the gRPC
// HostService that Python workers call back into. It keeps sessions, the
// tools each worker registered, the host tools Go code offers to Python, and
// the workers' heartbeats.
//
// Contract:
//   - A Server is a suture.Service. Serve listens on 127.0.0.1 with a port
//     chosen by the kernel (never any other interface) or, with
//     Network "unix", on a socket inside a directory only this user can enter
//     (mode 0700). Ready is closed once the first listener is up; Addr is then
//     a gRPC target both grpc-go and Python grpcio accept ("127.0.0.1:PORT" or
//     "unix:/path/to.sock"). A restarted Serve rebinds the same address when it
//     can, because running workers were handed that address.
//   - Every call must carry the run's token (internal/auth) or it is refused
//     with codes.Unauthenticated before any handler runs.
//   - When Serve's context ends, in-flight calls get a short grace period, are
//     then cancelled, the socket (and any directory Serve created) is removed,
//     and Serve returns nil.
//   - Requests and responses larger than Options.MaxMessageBytes are refused
//     with codes.ResourceExhausted. grpc clients have their own limits (grpc-go
//     receives 4 MiB by default); workers should raise theirs to match.
//
// Status codes of HostService:
//
//	InvalidArgument     malformed session id, negative ttl, tool spec without a name
//	NotFound            GetSession of an unknown session
//	FailedPrecondition  GetSession of a session whose TTL ran out (it is removed)
//	ResourceExhausted   InitializeSession past Options.MaxSessions; oversized messages
//	Unauthenticated     missing or wrong token
//
// Host tools never fail the RPC: whatever a host tool does — return an error,
// return something that cannot be encoded, panic — comes back as a ToolError in
// ExecuteHostToolResponse, and the host keeps running.
//
// Sessions live until deleted or until their TTL passes without access. Any
// read of a session (Get, GetSession, Heartbeat naming it, ExecuteHostTool
// naming it) counts as access. Tool registrations made under a session are
// dropped with it.
//
// # Who imports it
//
// Applications reach this package through the root package snakepit, which
// wraps it and re-exports the types its API returns; the names exported
// here beyond that are seams between snakepit's own packages.
package bridge
