package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oxide-ci/oxide/internal/environment/docker"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
)

// connectDocker connects to the Docker engine when a stage of r asks for a
// container, and removes what local runs that were killed left behind. Its
// jobs' scratch directories are made in tmp. It returns nil, nil when no
// stage asks for one.
func connectDocker(r *plan.Run, grace time.Duration, tmp string) (*docker.Engine, error) {
	need := false
	for _, n := range r.Nodes {
		if e := n.Job.Environment; e != nil && e.Type == pipeline.EnvContainer {
			need = true
		}
	}
	if !need {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	host, _ := os.Hostname()
	prefix := "local:" + host + ":"
	eng, err := docker.Connect(ctx, docker.Options{Owner: prefix + strconv.Itoa(os.Getpid()), Grace: grace, TempDir: tmp})
	if err != nil {
		return nil, err
	}
	eng.SweepOwners(ctx, prefix, func(owner string) bool {
		pid, err := strconv.Atoi(strings.TrimPrefix(owner, prefix))
		return err == nil && syscall.Kill(pid, 0) == syscall.ESRCH
	})
	return eng, nil
}

// registryPassword is the value of the secret that c's registry names,
// from --secret, --secrets-file or the environment.
func registryPassword(c *pipeline.Container, secrets map[string]string) string {
	if c == nil || c.Registry == nil || c.Registry.PasswordSecret == "" {
		return ""
	}
	if v, ok := secrets[c.Registry.PasswordSecret]; ok {
		return v
	}
	return os.Getenv(c.Registry.PasswordSecret)
}
