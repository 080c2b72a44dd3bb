//go:build !linux

package runner

import "os"

// pipe returns a pipe for a step's output.
func pipe() (r, w *os.File, err error) { return os.Pipe() }
