package server

import (
	"os"
	"testing"

	"github.com/oxide-ci/oxide/internal/agent/agentcmd"
)

func TestMain(m *testing.M) {
	agentcmd.RunIfChild("test") // the own agent of the servers the tests start
	os.Exit(m.Run())
}
