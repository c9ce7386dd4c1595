// Command snakepit runs a supervised pool of Python workers.
//
//	snakepit demo  [--workers N]                     a guided tour: start, call, stream, fail, stop, verify
//	snakepit run   [--workers N] [--adapter X] ...   serve until SIGINT/SIGTERM; SIGHUP reloads
//	snakepit serve [--listen ADDR] [--token-file F]  serve the pool to hosts on other machines (an agent)
//	snakepit exec  [--adapter X] TOOL '<json>'       one call, result JSON on stdout
//	snakepit reap  [--registry PATH]                 reap the leftovers of dead runs
//	snakepit doctor [--json] [default-pool flags of run] check this machine for what the default pool needs
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: snakepit <command> [flags]

commands:
  demo   start the showcase adapter, run each kind of call, stop, verify nothing is left
  run    start the pool and serve until SIGINT/SIGTERM (prints "ready run_id=<id> workers=<n>");
         SIGHUP replaces every worker process with one running the current code
  serve  run the pool as an agent that hosts on other machines join (see docs/SCALING.md)
  exec   run one tool call: snakepit exec [flags] TOOL '<json args>'
  reap   reap processes left by dead runs of a registry: snakepit reap [--registry PATH]
  doctor check this machine for what "snakepit run" with the same default-pool and agent flags
         needs (--json for scripts);
         exit status 0 when every required check passed

Run "snakepit <command> -h" for the flags of a command.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "exec":
		return cmdExec(args[1:], stdout, stderr)
	case "reap":
		return cmdReap(args[1:], stdout, stderr)
	case "doctor":
		return cmdDoctor(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "snakepit: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
