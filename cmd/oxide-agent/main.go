// Command oxide-agent runs jobs for an Oxide server: it connects outbound
// to the server's gRPC address, registers once with a bootstrap token, and
// runs the jobs the server pushes. `oxide agent …` runs it.
//
//	oxide-agent --server HOST:PORT --token T --labels a,b --data-dir D --concurrency N
//
// Every flag is also an environment variable: --data-dir is
// OXIDE_AGENT_DATA_DIR. SIGTERM or SIGINT shuts it down gracefully (exit
// 0); a second signal ends it at once.
package main

import (
	"os"

	"github.com/oxide-ci/oxide/internal/agent/agentcmd"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() { os.Exit(agentcmd.Main("oxide-agent", os.Args[1:], version)) }
