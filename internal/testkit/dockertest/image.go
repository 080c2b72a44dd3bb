package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// The host's static binaries that a root filesystem is made of (Debian's
// busybox-static and bash-static).
const (
	busyboxPath = "/bin/busybox"
	bashPath    = "/bin/bash-static"
)

// A tree is the content of a build context or a root filesystem: entries
// by slash-separated path without a leading slash.
type tree map[string]entry

type entry struct {
	typ  byte   // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	mode int64  // permission bits, and 01000 for sticky
	data []byte // a file's content or a symlink's target
}

func (t tree) file(name string, mode int64, data []byte) { t[name] = entry{tar.TypeReg, mode, data} }
func (t tree) dir(name string, mode int64)               { t[name] = entry{tar.TypeDir, mode, nil} }
func (t tree) symlink(name, target string)               { t[name] = entry{tar.TypeSymlink, 0o777, []byte(target)} }

// under returns a copy of t with every entry moved into dir.
func (t tree) under(dir string) tree {
	u := make(tree, len(t))
	for name, e := range t {
		u[path.Join(dir, name)] = e
	}
	return u
}

// tar returns t as a tar archive, the same bytes for the same tree: its
// entries sorted, owned by root, dated the epoch, with the directories
// that are not entries of t made 0755.
func (t tree) tar() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	made := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(t)) {
		for i := range len(name) {
			if d := name[:i]; name[i] == '/' && !made[d] && t[d].typ == 0 {
				made[d] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
					return nil, err
				}
			}
		}
		e := t[name]
		h := &tar.Header{Typeflag: e.typ, Name: name, Mode: e.mode, ModTime: time.Unix(0, 0)}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeSymlink:
			h.Linkname = string(e.data)
		default:
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// static returns an error unless the file at path is a statically linked
// executable, one that runs in an image without a libc.
func static(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// rootfs returns a busybox root filesystem: /bin/busybox from the host
// and a symlink to it for each of its applets, /bin/bash when the host has
// bash-static, /etc/os-release naming osName, /etc/passwd and /etc/group
// with root and nobody, /root and /tmp.
func rootfs(osName string) (tree, error) {
	busybox, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, err
	}
	applets, err := exec.Command(busyboxPath, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", busyboxPath, err)
	}
	t := tree{}
	for _, p := range strings.Fields(string(applets)) {
		if strings.Contains(p, "/") { // not linuxrc
			t.symlink(p, "/bin/busybox")
		}
	}
	t.file("bin/busybox", 0o755, busybox)
	switch bash, err := os.ReadFile(bashPath); {
	case err == nil:
		t.file("bin/bash", 0o755, bash)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	t.file("etc/os-release", 0o644, fmt.Appendf(nil, "NAME=%q\nID=busybox\n", osName))
	t.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	t.file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	t.dir("root", 0o700)
	t.dir("tmp", 0o1777)
	return t, nil
}

// build makes the image of the build context t (a Dockerfile at its root)
// unless the engine has it, and returns its reference: repo tagged with a
// hash of t. Two processes building the same t at once tag the same image.
func build(ctx context.Context, cli *client.Client, repo string, t tree) (ref string, built bool, err error) {
	tarball, err := t.tar()
	if err != nil {
		return "", false, err
	}
	sum := sha256.Sum256(tarball)
	ref = repo + ":" + hex.EncodeToString(sum[:6])
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref, false, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", false, err
	}
	res, err := cli.ImageBuild(ctx, bytes.NewReader(tarball), client.ImageBuildOptions{Tags: []string{ref}, Remove: true, ForceRemove: true})
	if err != nil {
		return "", false, fmt.Errorf("build %s: %w", ref, err)
	}
	defer res.Body.Close()
	var out strings.Builder
	for dec := json.NewDecoder(res.Body); ; {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return ref, true, nil
		} else if err != nil {
			return "", false, fmt.Errorf("build %s: %w", ref, err)
		}
		if m.Error != nil {
			return "", false, fmt.Errorf("build %s: %s\n%s", ref, m.Error.Message, out.String())
		}
		out.WriteString(m.Stream)
	}
}
