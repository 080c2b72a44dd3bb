package runner

import (
	"os"
	"syscall"
)

// pipe returns a pipe for a step's output. The read end is non-blocking
// and registered with the runtime poller, so that reads can have
// deadlines; the write end is a plain blocking descriptor for the child
// process, never registered. os.Pipe registers both ends and os/exec then
// makes the write end blocking again: eight system calls more per step.
func pipe() (r, w *os.File, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	if err := syscall.SetNonblock(p[1], false); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}
