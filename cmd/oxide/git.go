package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"

	"github.com/oxide-ci/oxide/internal/plan"
)

// detectGit reads the branch and commit of the checkout that holds dir from
// its .git directory, without running git. Missing facts stay empty.
func detectGit(dir string) plan.Trigger {
	var g plan.Trigger
	gitDir := ""
	for d := dir; ; d = filepath.Dir(d) {
		if fi, err := os.Stat(filepath.Join(d, ".git")); err == nil && fi.IsDir() {
			gitDir = filepath.Join(d, ".git")
			break
		}
		if filepath.Dir(d) == d {
			return g
		}
	}
	head, err := os.ReadFile(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return g
	}
	h := strings.TrimSpace(string(head))
	ref, ok := strings.CutPrefix(h, "ref: ")
	if !ok { // detached HEAD
		g.SHA = h
		return g
	}
	g.Ref = ref
	g.Branch = strings.TrimPrefix(ref, "refs/heads/")
	if sha, err := os.ReadFile(filepath.Join(gitDir, ref)); err == nil {
		g.SHA = strings.TrimSpace(string(sha))
		return g
	}
	if f, err := os.Open(filepath.Join(gitDir, "packed-refs")); err == nil {
		defer f.Close()
		for sc := bufio.NewScanner(f); sc.Scan(); {
			if sha, name, ok := strings.Cut(sc.Text(), " "); ok && name == ref {
				g.SHA = sha
			}
		}
	}
	return g
}

// overrideGit applies --branch, --ref, --sha and --event.
func overrideGit(g *plan.Trigger, f *runFlags) {
	if f.branch != "" {
		g.Branch, g.Ref = f.branch, "refs/heads/"+f.branch
	}
	if f.ref != "" {
		g.Ref = f.ref
		if b, ok := strings.CutPrefix(f.ref, "refs/heads/"); ok {
			g.Branch = b
		}
	}
	if f.sha != "" {
		g.SHA = f.sha
	}
	g.Event = f.event
}
