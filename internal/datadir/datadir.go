// Package datadir keeps a data directory private: the directory itself
// 0700 and the files directly in it (databases, keys, tokens) 0600, so
// that no other user of the machine reads them.
package datadir

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// Modes of a private data directory and of the files in it.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// Secure creates dir (DirMode) if it does not exist, then tightens it to
// DirMode and every regular file directly in it that others may use to
// FileMode, logging each change. Subdirectories are left as they are: the
// directory's mode keeps others out of them. A mode that cannot be changed
// (the directory or file is another user's) is an error that says so, for
// the program to refuse to start.
func Secure(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if err := tighten(dir, fi, DirMode, log); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if err := tighten(filepath.Join(dir, e.Name()), fi, FileMode, log); err != nil {
			return err
		}
	}
	return nil
}

// tighten changes path's mode to want if it grants more than want.
func tighten(path string, fi fs.FileInfo, want fs.FileMode, log *slog.Logger) error {
	have := fi.Mode().Perm()
	if have&^want == 0 {
		return nil
	}
	if err := os.Chmod(path, want); err != nil {
		return fmt.Errorf("%s is mode %04o, readable by others, and cannot be made %04o (%w): "+
			"run as its owner, chown it to this user (uid %d), or use another data directory", path, have, want, err, os.Getuid())
	}
	log.Warn("data directory: mode tightened: it was open to other users", "path", path, "was", fmt.Sprintf("%04o", have), "now", fmt.Sprintf("%04o", want))
	return nil
}
