package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// siblingCmd runs the binary oxide-NAME with the same arguments, the way
// git runs git-foo: next to this executable first, else on PATH.
func siblingCmd(name, short string) *cobra.Command {
	return &cobra.Command{
		Use:                name + " [flags]",
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			bin := "oxide-" + name
			path, err := findSibling(bin)
			if err != nil {
				return &exitError{code: exitFailure, err: fmt.Errorf("oxide %s is not installed: no %s next to oxide or on PATH", name, bin)}
			}
			err = syscall.Exec(path, append([]string{bin}, args...), os.Environ())
			return &exitError{code: exitFailure, err: fmt.Errorf("run %s: %w", path, err)}
		},
	}
}

func findSibling(bin string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), bin)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return exec.LookPath(bin)
}
