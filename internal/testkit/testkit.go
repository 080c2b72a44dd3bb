// Package testkit holds what the project's tests share: waiting for a
// condition, with a deadline, instead of sleeping.
package testkit

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// Until polls cond until it holds, failing t with cond's last reason when
// within passes first.
func Until(t testing.TB, within time.Duration, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitFor polls cond until it holds, failing t when within passes first.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	Until(t, within, func() (bool, string) { return cond(), "waiting for " + what })
}

// Exited reports whether process pid has exited; a zombie that nobody
// reaps (PID 1 of a container may not) counts.
func Exited(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// SharedDir is a new directory that every user of the machine may enter
// (mode 0755; t.TempDir's parents are the test's user's alone), removed
// when the test ends: the directory of a server's own agent, which runs as
// another user when the tests run as root.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "oxide-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
