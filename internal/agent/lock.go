package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// LockFile, in the data directory, is held by the agent that runs on it.
const LockFile = "agent.lock"

// lockDataDir takes the data directory for this process: a second agent
// started on it (a server's own agent restarted while the previous one
// still hands its jobs back) waits until the first has stopped, instead of
// sharing its identity and spool. release lets the next one go.
func lockDataDir(dir string, log *slog.Logger) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		log.Warn("another agent runs on this data directory: waiting for it to stop", "data_dir", dir)
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}
