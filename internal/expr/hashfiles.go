package expr

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// hashFiles returns the SHA-256, in hex, of the SHA-256 sums of the files
// under dir that match the patterns, taken in path order; "" when no file
// matches. Patterns are slash-separated and relative to dir; they use
// path.Match syntax per segment, "**" matches any number of segments, and a
// pattern starting with "!" excludes the files it matches.
func hashFiles(dir string, patterns []string) (string, error) {
	if dir == "" {
		dir = "."
	}
	var include, exclude [][]string
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		segs, err := splitPattern(p)
		if err != nil {
			return "", err
		}
		if segs == nil {
			continue
		}
		if neg {
			exclude = append(exclude, segs)
		} else {
			include = append(include, segs)
		}
	}

	found := map[string]bool{}
	for _, segs := range include {
		if err := globFiles(dir, segs, found); err != nil {
			return "", err
		}
	}
	files := make([]string, 0, len(found))
	for f := range found {
		if !slices.ContainsFunc(exclude, func(segs []string) bool { return matchSegments(segs, strings.Split(f, "/")) }) {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return "", nil
	}
	slices.Sort(files)

	all := sha256.New()
	one := sha256.New()
	var sum [sha256.Size]byte
	for _, f := range files {
		one.Reset()
		if err := hashFile(one, filepath.Join(dir, filepath.FromSlash(f))); err != nil {
			return "", err
		}
		all.Write(one.Sum(sum[:0]))
	}
	return hex.EncodeToString(all.Sum(nil)), nil
}

func hashFile(w io.Writer, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// splitPattern splits a pattern into segments, folding repeated "**" and
// dropping "." segments. It returns nil for an empty pattern.
func splitPattern(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if path.IsAbs(p) || filepath.IsAbs(p) {
		return nil, fmt.Errorf("pattern %q is not relative to the workspace", p)
	}
	var segs []string
	for _, s := range strings.Split(p, "/") {
		switch {
		case s == "" || s == ".":
			continue
		case s == "..":
			return nil, fmt.Errorf("pattern %q leaves the workspace", p)
		case s == "**" && len(segs) > 0 && segs[len(segs)-1] == "**":
			continue
		}
		if _, err := path.Match(s, ""); err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
		segs = append(segs, s)
	}
	if segs == nil {
		return nil, nil
	}
	return segs, nil
}

func hasMeta(seg string) bool { return strings.ContainsAny(seg, `*?[\`) }

// globFiles adds to found the slash paths, relative to dir, of the regular
// files (or links to them) that match segs.
func globFiles(dir string, segs []string, found map[string]bool) error {
	// Walk only below the literal prefix of the pattern.
	n := 0
	for n < len(segs) && !hasMeta(segs[n]) {
		n++
	}
	prefix := strings.Join(segs[:n], "/")
	root := filepath.Join(dir, filepath.FromSlash(prefix))
	if n == len(segs) {
		if isRegular(root) {
			found[prefix] = true
		}
		return nil
	}
	err := filepath.WalkDir(root, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, name)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if matchSegments(segs, strings.Split(rel, "/")) && (d.Type().IsRegular() || isRegular(name)) {
			found[rel] = true
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func isRegular(name string) bool {
	fi, err := os.Stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// matchSegments matches a path's segments against a pattern's.
func matchSegments(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			pat = pat[1:]
			if len(pat) == 0 {
				return true
			}
			for i := range name {
				if matchSegments(pat, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
