package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/oxide-ci/oxide/internal/agent"
	"github.com/oxide-ci/oxide/internal/agent/agentcmd"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/server/agentsvc"
	"github.com/oxide-ci/oxide/internal/store"
)

// The server's own agent is an oxide-agent child process, this executable
// run with agentcmd.ChildArg, connected to the server's agent endpoint like
// any other agent. Jobs never run in the server's process nor with its
// identity: the child has its own data directory outside the server's, an
// environment holding none of the server's variables, and, when the server
// runs as root, an unprivileged user of its own, so that a job cannot read
// the server's database, keys and tokens. Its directory (Config.AgentDir)
// holds:
//
//	oxide-server  a link to (or copy of) this executable, root's, as root
//	ca.pem        the CA the agent verifies the server with
//	data/         the agent's data directory: identity, workspaces, spool
//	home/         its HOME, as root
const (
	ownProviderPrefix = "server:" // the provider of its store.Worker rows
	ownRegisterTTL    = 10 * time.Minute
	ownStopWait       = 30 * time.Second // for its jobs to be handed back on shutdown
	ownOnlineWait     = 10 * time.Second // for it to connect before the server says it is ready
)

// ownAgent supervises the server's own agent: it starts the child, starts
// it again when it dies, and stops it on shutdown.
type ownAgent struct {
	cfg      Config
	st       store.Store
	agents   *agentsvc.Server
	ca       *pki.CA
	server   string // the address the child dials
	log      *slog.Logger
	dir      string
	provider string
	// The child's identity: cred is nil when it runs as the server's user.
	cred      *syscall.Credential
	home      string
	isolation string // what keeps its jobs from the server's files, or "none: why"
	program   string
	worker    store.Worker
	online    chan struct{} // closed once its agent first connected
	onlineOne sync.Once
}

// startOwnAgent prepares the own agent's directory and user and starts
// supervising it; the returned function stops it and waits. online is
// closed once the agent first connected.
func startOwnAgent(ctx context.Context, cfg Config, st store.Store, agents *agentsvc.Server, ca *pki.CA, grpcAddr string, log *slog.Logger) (stop func(), online <-chan struct{}, err error) {
	if ca.Key == nil {
		return nil, nil, errors.New("--agents: the server's own agent cannot register: the CA (--tls-ca) has no private key; use --agents 0 and agents registered elsewhere")
	}
	o := &ownAgent{cfg: cfg, st: st, agents: agents, ca: ca, server: dialAddr(grpcAddr), log: log.With("agent", "own"), online: make(chan struct{})}
	host, _ := os.Hostname()
	o.provider = ownProviderPrefix + stableID(cfg.DataDir, host)[:8]
	if err := o.prepare(); err != nil {
		return nil, nil, fmt.Errorf("the server's own agent: %w", err)
	}
	switch {
	case o.cred == nil:
		o.log.Warn("JOBS ARE NOT ISOLATED FROM THIS SERVER: " + o.isolation)
	case len(o.cred.Groups) > 0:
		o.log.Warn("the server's own agent runs jobs as "+o.isolation, "dir", o.dir)
	default:
		o.log.Info("the server's own agent runs jobs as "+o.isolation, "dir", o.dir)
	}
	// Rows of an earlier life of this server's own agent are over.
	old, err := st.Workers().List(ctx, o.provider, store.WorkerProvisioning, store.WorkerReady, store.WorkerTerminating)
	if err != nil {
		return nil, nil, err
	}
	for _, w := range old {
		if _, err := st.Workers().Update(ctx, w.ID, store.WorkerUpdate{State: store.WorkerTerminated, Error: "the server restarted"}); err != nil {
			return nil, nil, err
		}
	}
	o.worker, err = st.Workers().Create(ctx, store.Worker{Provider: o.provider, Isolation: o.isolation})
	if err != nil {
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { o.supervise(runCtx); close(done) }()
	return func() { cancel(); <-done }, o.online, nil
}

// prepare makes the directory and, as root, the user.
func (o *ownAgent) prepare() error {
	o.dir = o.cfg.AgentDir
	root := os.Geteuid() == 0
	isolated := root && o.cfg.AgentUser != ""
	if o.dir == "" {
		if isolated {
			o.dir = filepath.Join("/var/lib/oxide/agents", stableID(o.cfg.DataDir, "own-agent")[:8])
		} else {
			abs, err := filepath.Abs(o.cfg.DataDir)
			if err != nil {
				return err
			}
			o.dir = abs + "-agent"
		}
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	o.dir = dir
	if inside(o.cfg.DataDir, o.dir) || inside(o.dir, o.cfg.DataDir) {
		return fmt.Errorf("--agent-dir %s: it must be outside the data directory %s, and not hold it", o.dir, o.cfg.DataDir)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	mode := fs.FileMode(0o700)
	if isolated {
		mode = 0o755 // the agent's user goes through it
	}
	if err := os.MkdirAll(o.dir, mode); err != nil {
		return err
	}
	if err := os.Chmod(o.dir, mode); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.dir, agent.CAFile), o.ca.CertPEM, 0o644); err != nil {
		return err
	}
	data := filepath.Join(o.dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	if !isolated {
		o.program = self
		o.home = os.Getenv("HOME")
		switch {
		case !root:
			o.isolation = fmt.Sprintf("none: the server does not run as root, so its jobs run as its user (uid %d) and can read what it reads: "+
				"its data directory, keys and tokens, and its process; run it as root (its jobs then run as an unprivileged user) or run jobs on agents elsewhere (--agents 0)", os.Getuid())
		default:
			o.isolation = "none: --agent-user is empty, so the jobs run as root and can read everything the server has; give --agent-user"
		}
		return nil
	}

	u, err := runnerUser(o.cfg.AgentUser, o.log)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		return fmt.Errorf("--agent-user %s is root", o.cfg.AgentUser)
	}
	o.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	o.isolation = fmt.Sprintf("user %s (uid %d)", u.Username, uid)
	if gid, ok := o.dockerGroup(); ok {
		o.cred.Groups = append(o.cred.Groups, gid)
		o.isolation += " in the Docker engine's group: jobs it runs on the host can use the engine, which is root on this machine (--docker off or --host-only keep it out)"
	}
	o.home = filepath.Join(o.dir, "home")
	for _, d := range []string{data, o.home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := chownTree(d, uid, gid); err != nil {
			return err
		}
	}
	// The user cannot go through the directories of a root-owned
	// executable (go test's, or one in /root): the agent runs a link to it,
	// or a copy, that is root's and the user's to run only.
	o.program = filepath.Join(o.dir, filepath.Base(os.Args[0]))
	return placeProgram(self, o.program)
}

// runnerUser looks the user up, creating it as a system user if needed.
func runnerUser(name string, log *slog.Logger) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if !errors.As(err, new(user.UnknownUserError)) {
		return nil, err
	}
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("create the user %s for jobs (useradd: %v: %s); create it yourself or give --agent-user", name, err, strings.TrimSpace(string(out)))
	}
	log.Info("created the user the server's own agent runs jobs as", "user", name)
	return user.Lookup(name)
}

// dockerGroup is the group of the Docker engine's socket, when the agent
// is to run container jobs on it.
func (o *ownAgent) dockerGroup() (uint32, bool) {
	if o.cfg.Docker == "off" || o.cfg.HostOnly {
		return 0, false
	}
	sock := "/var/run/docker.sock"
	if h, ok := strings.CutPrefix(os.Getenv("DOCKER_HOST"), "unix://"); ok {
		sock = h
	}
	fi, err := os.Stat(sock)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Gid == 0 {
		return 0, false
	}
	return st.Gid, true
}

// placeProgram makes dst a hard link to src, or a copy when they are on
// different file systems, root's and mode 0755.
func placeProgram(src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err != nil {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o005 != 0o005 {
		return fmt.Errorf("%s is mode %04o: its agent's user cannot run it", dst, fi.Mode().Perm())
	}
	return nil
}

// chownTree gives dir and what it holds to uid:gid, when dir is not
// theirs already.
func chownTree(dir string, uid, gid int) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// inside reports whether path is dir or beneath it.
func inside(dir, path string) bool {
	dir, _ = filepath.Abs(dir)
	path, _ = filepath.Abs(path)
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// dialAddr is how a process on this machine reaches the listener at addr.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// supervise runs the child until ctx is done, starting it again, after a
// pause that grows while it keeps failing, when it exits on its own.
func (o *ownAgent) supervise(ctx context.Context) {
	pause := time.Second
	for {
		started := time.Now()
		err := o.runOnce(ctx)
		if ctx.Err() != nil {
			reason := ""
			if err != nil {
				reason = err.Error()
			}
			o.setState(store.WorkerTerminated, reason)
			return
		}
		if time.Since(started) > time.Minute {
			pause = time.Second
		}
		o.log.Error("the server's own agent stopped; starting it again", "err", err, "in", pause)
		select {
		case <-ctx.Done():
			o.setState(store.WorkerTerminated, "")
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// runOnce starts the child and waits for it; ctx done stops it with
// SIGTERM, which hands its jobs back, and SIGKILL after ownStopWait.
func (o *ownAgent) runOnce(ctx context.Context) error {
	data := filepath.Join(o.dir, "data")
	token, err := o.registration(ctx, data)
	if err != nil {
		return err
	}
	args := []string{agentcmd.ChildArg,
		"--server", o.server, "--data-dir", data, "--ca", filepath.Join(o.dir, agent.CAFile),
		"--concurrency", strconv.Itoa(o.cfg.Agents), "--name", ownName(),
		"--labels", strings.Join(o.cfg.AgentLabels, ","), "--heartbeat", ownHeartbeat(o.cfg).String(), "--log-format", "json",
	}
	if o.cfg.Docker != "" {
		args = append(args, "--docker", o.cfg.Docker)
	}
	if o.cfg.LogLevel != "" {
		args = append(args, "--log-level", o.cfg.LogLevel)
	}
	if o.cfg.HostOnly {
		args = append(args, "--host-only")
	}
	if o.cfg.DockerPrivileged {
		args = append(args, "--docker-privileged")
	}
	cmd := exec.Command(o.program, args...)
	cmd.Args[0] = filepath.Base(os.Args[0])
	cmd.Dir = o.dir
	cmd.Env = o.environ(token)
	// Its own process group keeps a terminal's ^C for the server, which
	// stops it in order; Pdeathsig stops it when the server dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Credential: o.cred}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	// Pdeathsig fires when the thread that started the child ends: this
	// goroutine keeps its thread until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return err
	}
	var forwarded sync.WaitGroup
	forwarded.Go(func() { forwardLog(stderr, o.log) })
	o.log.Debug("the server's own agent started", "pid", cmd.Process.Pid)
	waited := make(chan error, 1)
	go func() {
		forwarded.Wait()
		waited <- cmd.Wait()
	}()
	connected := time.NewTicker(20 * time.Millisecond)
	defer connected.Stop()
	for {
		select {
		case err := <-waited:
			return err
		case <-connected.C:
			id, err := agent.LoadIdentity(data)
			if err != nil {
				continue
			}
			if a, err := o.st.Agents().Get(ctx, id.AgentID); err == nil && a.Status != store.AgentOffline && a.Status != store.AgentLost {
				o.setReady(id.AgentID, cmd.Process.Pid)
				connected.Stop()
			}
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-waited:
				return err
			case <-time.After(ownStopWait):
				cmd.Process.Kill()
				<-waited
				return fmt.Errorf("it did not stop within %s of SIGTERM: killed", ownStopWait)
			}
		}
	}
}

// registration returns the bootstrap token the child registers with, or
// "" when its identity is current: issued by this server's CA, for an
// agent the store knows. A stale identity is removed.
func (o *ownAgent) registration(ctx context.Context, data string) (string, error) {
	id, err := agent.LoadIdentity(data)
	if err == nil {
		_, gerr := o.st.Agents().Get(ctx, id.AgentID)
		switch {
		case gerr == nil && id.CAFingerprint() == o.ca.Fingerprint():
			return "", nil
		case gerr != nil && !errors.Is(gerr, store.ErrNotFound):
			return "", gerr
		}
		o.log.Info("the server's own agent registers again: its identity is another CA's or another database's", "agent_id", id.AgentID)
	} else if !errors.Is(err, agent.ErrNotRegistered) {
		o.log.Warn("the server's own agent registers again: its identity does not load", "err", err)
	}
	for _, f := range []string{agent.InfoFile, agent.CertFile, agent.KeyFile, agent.CAFile} {
		if err := os.Remove(filepath.Join(data, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	token, _, err := o.agents.CreateToken(ctx, ownRegisterTTL, o.cfg.AgentLabels, "server")
	return token, err
}

// ownEnv are the variables of the server's environment that its agent
// gets; none of them holds a secret. HOME, USER and LOGNAME are the
// agent's user's.
var ownEnv = []string{"PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TERM",
	"DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_API_VERSION"}

// environ is the child's whole environment: ownEnv, --agent-env, and the
// bootstrap token when it registers. TMPDIR goes along only when the child
// is the server's user, or named by --agent-env.
func (o *ownAgent) environ(token string) []string {
	names := slices.Concat(ownEnv, o.cfg.AgentEnv)
	if o.cred == nil {
		names = append(names, "TMPDIR")
	}
	var env []string
	for _, k := range names {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if o.home != "" {
		env = append(env, "HOME="+o.home)
	}
	if o.cred != nil {
		if u, err := user.LookupId(strconv.Itoa(int(o.cred.Uid))); err == nil {
			env = append(env, "USER="+u.Username, "LOGNAME="+u.Username)
		}
	} else {
		for _, k := range []string{"USER", "LOGNAME"} {
			if v, ok := os.LookupEnv(k); ok {
				env = append(env, k+"="+v)
			}
		}
	}
	if token != "" {
		env = append(env, "OXIDE_AGENT_TOKEN="+token)
	}
	return env
}

// setReady records that the agent, started as pid, is connected.
func (o *ownAgent) setReady(agentID string, pid int) {
	o.onlineOne.Do(func() { close(o.online) })
	w, err := o.st.Workers().Update(context.Background(), o.worker.ID, store.WorkerUpdate{
		State: store.WorkerReady, AgentID: agentID, Handle: fmt.Sprintf("pid %d", pid),
	})
	if err != nil {
		o.log.Warn("record the server's own agent", "err", err)
		return
	}
	o.worker = w
}

func (o *ownAgent) setState(s store.WorkerState, reason string) {
	if _, err := o.st.Workers().Update(context.Background(), o.worker.ID, store.WorkerUpdate{State: s, Error: reason}); err != nil {
		o.log.Warn("record the server's own agent", "err", err)
	}
}

// ownName is the own agent's name.
func ownName() string {
	host, _ := os.Hostname()
	return host + "-server"
}

// ownHeartbeat is the own agent's heartbeat interval: often enough for
// the leases.
func ownHeartbeat(cfg Config) time.Duration {
	d := cfg.Lease
	if d <= 0 {
		d = 30 * time.Second // the scheduler's default lease
	}
	return min(max(d/3, 100*time.Millisecond), 10*time.Second)
}

// forwardLog logs the child's log records (slog's JSON lines) through
// log, at their level; anything else it prints (a panic) as errors.
func forwardLog(r io.Reader, log *slog.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			log.Error(sc.Text())
			continue
		}
		var level slog.Level
		if name, _ := rec[slog.LevelKey].(string); level.UnmarshalText([]byte(name)) != nil {
			level = slog.LevelInfo
		}
		msg, _ := rec[slog.MessageKey].(string)
		attrs := make([]any, 0, 2*len(rec))
		for _, k := range slices.Sorted(maps.Keys(rec)) {
			if k != slog.TimeKey && k != slog.LevelKey && k != slog.MessageKey {
				attrs = append(attrs, k, rec[k])
			}
		}
		log.Log(context.Background(), level, msg, attrs...)
	}
	io.Copy(io.Discard, r)
}
