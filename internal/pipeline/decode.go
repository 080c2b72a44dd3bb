package pipeline

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/robfig/cron/v3"
)

// The keys of each mapping, aliases included.
var (
	pipelineKeys = []string{"version", "name", "description", "triggers", "variables", "env", "environment",
		"stages", "cache", "artifacts", "timeout_minutes", "concurrency"}
	stageKeys = []string{"name", "display_name", "depends_on", "needs", "condition", "environment", "variables",
		"env", "secrets", "steps", "parallel", "timeout_minutes", "timeout", "retry", "agent", "matrix",
		"approval", "cache", "artifacts"}
	stepKeys = []string{"name", "id", "display_name", "plugin", "uses", "with", "run", "shell",
		"working_directory", "environment", "variables", "env", "secrets", "condition", "timeout_minutes",
		"timeout", "retry", "continue_on_error", "outputs"}
	triggerKeys     = []string{"type", "branches", "paths", "paths_ignore", "tags", "cron", "timezone"}
	matrixKeys      = []string{"dimensions", "include", "exclude", "fail_fast", "max_parallel"}
	environmentKeys = []string{"type", "container", "firecracker", "nix"}
	containerKeys   = []string{"image", "registry", "shell", "user", "workdir", "entrypoint", "volumes",
		"network", "privileged", "capabilities", "resources"}
	firecrackerKeys = []string{"kernel", "rootfs", "vcpu_count", "memory_mb", "disk_size_gb", "network",
		"boot_timeout_seconds"}
	nixKeys = []string{"flake", "packages", "shell_hook", "pure", "sandbox", "substituters",
		"trusted_public_keys"}
)

var (
	triggerTypes      = []string{"push", "pull_request", "cron", "manual", "api", "webhook"}
	triggerShorthands = append(slices.Clip(triggerTypes), "schedule")
	environmentTypes  = []string{"container", "firecracker", "nix", "host"}
	stepShells        = []string{"bash", "sh", "python", "powershell", "pwsh"}
	secretProviders   = []string{"oxide", "vault", "aws_ssm", "aws_secrets_manager", "gcp_secret_manager",
		"azure_keyvault", "environment"}
)

// maxTimeout bounds every timeout, so that none overflows a Duration.
const maxTimeout = 35 * 24 * time.Hour

// maxApprovers bounds an approval's required_approvers.
const maxApprovers = 100

// validID reports whether id can be referenced as steps.<id>: a letter or
// '_', then letters, digits, '_' and '-'.
func validID(id string) bool {
	for i, c := range id {
		letter := 'a' <= c|0x20 && c|0x20 <= 'z' || c == '_'
		if !letter && (i == 0 || c != '-' && (c < '0' || c > '9')) {
			return false
		}
	}
	return id != ""
}

func (d *decoder) pipeline(n ast.Node) *Pipeline {
	o := d.object(n, "pipeline", "pipeline", pipelineKeys)
	if o == nil {
		return nil
	}
	p := &Pipeline{File: d.file}
	if v, ok := o.required("version"); ok {
		p.Version = d.str(v, "version")
		if p.Version != "1" && p.Version != "1.0" {
			d.errorf(pos(v), `unsupported version %q; want "1" or "1.0"`, p.Version)
		}
	}
	if v, ok := o.required("name"); ok {
		p.Name = d.text(v, "name")
	}
	p.Description = o.str("description")
	if v, ok := o.get("triggers"); ok {
		for _, t := range d.list(v, "triggers") {
			if t, ok := d.trigger(t); ok {
				p.Triggers = append(p.Triggers, t)
			}
		}
	}
	p.Variables = o.vars()
	if v, ok := o.get("environment"); ok {
		p.Environment = d.environment(v)
		d.warnEnvironment(pos(v), p.Environment)
	}
	if v, ok := o.required("stages"); ok {
		items := d.list(v, "stages")
		if len(items) == 0 {
			d.errorf(pos(v), "stages: a pipeline needs at least one stage")
		}
		for _, item := range items {
			if s := d.stageDef(item); s != nil {
				p.Stages = append(p.Stages, s)
			}
		}
	}
	if v, ok := o.get("cache"); ok {
		p.Cache = d.cache(v)
	}
	if v, ok := o.get("artifacts"); ok {
		p.Artifacts = d.artifacts(v)
	}
	p.Timeout = time.Duration(o.integer("timeout_minutes", 60, 1, int(maxTimeout/time.Minute))) * time.Minute
	if v, ok := o.get("concurrency"); ok {
		if c := d.object(v, "concurrency", "concurrency", []string{"group", "cancel_in_progress"}); c != nil {
			p.Concurrency = &Concurrency{Group: c.str("group"), CancelInProgress: c.boolean("cancel_in_progress", false)}
			if g, ok := c.get("group"); ok && strings.Contains(p.Concurrency.Group, "${{") {
				d.pending = append(d.pending, text{node: g, s: p.Concurrency.Group, only: []string{"branch", "ref", "sha", "event"}})
			}
		}
	}
	return p
}

// trigger decodes the schema form `- type: push`, the shorthands
// `- push: {branches}`, `- schedule: {cron}` and `- cron: "0 2 * * *"`, and
// a bare `- manual`.
func (d *decoder) trigger(n ast.Node) (Trigger, bool) {
	t := Trigger{Pos: pos(n)}
	var o *object
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		fs, _ := d.fields(n, "triggers")
		if len(fs) == 1 && !slices.Contains(triggerKeys, fs[0].key) {
			f := fs[0]
			if t.Type = d.triggerType(f.key, f.pos); t.Type == "" {
				return t, false
			}
			if s, ok := scalarText(f.value); ok && t.Type == TriggerCron {
				t.Cron = s
				d.checkCron(&t, f.value)
				return t, true
			}
			if !isNull(f.value) {
				o = d.object(f.value, f.key, f.key+" trigger", triggerKeys[1:])
			}
		} else {
			o = d.objectOf(fs, t.Pos, "trigger", triggerKeys)
			_, hasType := o.fields["type"]
			_, hasCron := o.fields["cron"]
			if v, ok := o.get("type"); ok {
				t.Type = TriggerType(d.enum(v, "type", triggerTypes))
			} else if hasType || !hasCron {
				o.required("type")
			} else {
				t.Type = TriggerCron // `- cron: "0 2 * * *"`
			}
		}
	default:
		if t.Type = d.triggerType(d.str(n, "triggers"), t.Pos); t.Type == "" {
			return t, false
		}
	}
	if o != nil {
		t.Branches = o.texts("branches")
		t.Paths = o.texts("paths")
		t.PathsIgnore = o.texts("paths_ignore")
		t.Tags = o.texts("tags")
		if v, ok := o.get("timezone"); ok {
			if t.Timezone = d.str(v, "timezone"); !validTimezone(t.Timezone) {
				d.errorf(pos(v), "unknown timezone %q", t.Timezone)
			}
		}
		if v, ok := o.get("cron"); ok {
			t.Cron = d.str(v, "cron")
			d.checkCron(&t, v)
			return t, true
		}
	}
	if t.Type == TriggerCron {
		d.errorf(t.Pos, "a cron trigger needs a cron expression")
	}
	return t, true
}

// triggerType checks the type name of a shorthand trigger.
func (d *decoder) triggerType(name string, p Pos) TriggerType {
	if name == "schedule" {
		return TriggerCron
	}
	if !slices.Contains(triggerTypes, name) {
		d.errorf(p, "unknown trigger type %q%s", name, didYouMean(name, triggerShorthands))
		return ""
	}
	return TriggerType(name)
}

// checkCron checks the cron expression of t, written at n.
func (d *decoder) checkCron(t *Trigger, n ast.Node) {
	if t.Type != TriggerCron {
		d.errorf(pos(n), "cron is only for cron triggers, not %s", t.Type)
		return
	}
	if _, err := cron.ParseStandard(t.Cron); err != nil {
		d.errorf(pos(n), "invalid cron expression %q: %v", t.Cron, err)
	}
}

func validTimezone(name string) bool {
	_, err := time.LoadLocation(name)
	return err == nil
}

func (d *decoder) stageDef(n ast.Node) *Stage {
	o := d.object(n, "stages", "stage", stageKeys)
	if o == nil {
		return nil
	}
	s := &Stage{Pos: o.pos}
	d.stage = s
	defer func() { d.stage = nil }()
	if v, ok := o.required("name"); ok {
		s.Name = d.text(v, "name")
	}
	s.DisplayName = o.text("display_name")
	if f, ok := o.pick("depends_on", "needs"); ok {
		s.HasDependsOn = true
		items := []ast.Node{f.value}
		switch f.value.(type) {
		case nil, *ast.NullNode:
			items = nil
		case *ast.SequenceNode:
			items = d.list(f.value, f.key)
		}
		for _, item := range items {
			name, ok := scalarText(item)
			if !ok {
				d.typeError(item, f.key, "a stage name")
				continue
			}
			s.DependsOn = append(s.DependsOn, name)
			s.DependsOnPos = append(s.DependsOnPos, pos(item))
		}
	}
	if v, ok := o.get("condition"); ok {
		s.Condition = d.condition(v)
	}
	if v, ok := o.get("environment"); ok {
		s.Environment = d.environment(v)
		d.warnEnvironment(pos(v), s.Environment)
	}
	s.Variables = o.vars()
	s.Secrets = o.secrets()
	if v, ok := o.required("steps"); ok {
		items := d.list(v, "steps")
		if _, isList := v.(*ast.SequenceNode); isList && len(items) == 0 {
			d.errorf(pos(v), "stage %q has no steps", s.Name)
		}
		for _, item := range items {
			if st := d.step(item); st != nil {
				s.Steps = append(s.Steps, st)
			}
		}
	}
	s.Parallel = o.boolean("parallel", false)
	s.Timeout = o.timeout(0)
	if v, ok := o.get("retry"); ok {
		s.Retry = d.retry(v)
	}
	if v, ok := o.get("agent"); ok {
		if a := d.object(v, "agent", "agent", []string{"labels", "name"}); a != nil {
			s.Agent = &AgentSelector{Labels: a.texts("labels"), Name: a.text("name")}
		}
	}
	if v, ok := o.get("matrix"); ok {
		s.Matrix = d.matrix(v)
	}
	if v, ok := o.get("approval"); ok {
		if a := d.object(v, "approval", "approval", []string{"required", "approvers", "required_approvers", "timeout_hours"}); a != nil {
			s.Approval = &Approval{
				Required:          a.boolean("required", true),
				Approvers:         a.texts("approvers"),
				RequiredApprovers: a.integer("required_approvers", 1, 1, maxApprovers),
				TimeoutHours:      a.integer("timeout_hours", 0, 1, int(maxTimeout/time.Hour)),
			}
		}
	}
	if v, ok := o.get("cache"); ok {
		s.Cache = d.cache(v)
	}
	if v, ok := o.get("artifacts"); ok {
		s.Artifacts = d.artifacts(v)
	}
	return s
}

func (d *decoder) step(n ast.Node) *Step {
	o := d.object(n, "steps", "step", stepKeys)
	if o == nil {
		return nil
	}
	st := &Step{Pos: o.pos, ContinueOnError: "false"}
	if v, ok := o.required("name"); ok {
		st.Name = d.text(v, "name")
	}
	st.ID = st.Name
	if v, ok := o.get("id"); ok {
		if st.ID = d.str(v, "id"); !validID(st.ID) {
			d.errorf(pos(v), "invalid step id %q: use letters, digits, '_' and '-', starting with a letter or '_'", st.ID)
		}
	}
	st.DisplayName = o.text("display_name")
	if f, ok := o.pick("plugin", "uses"); ok && !isNull(f.value) {
		st.Plugin = d.text(f.value, f.key)
		d.warnPlugin(f.pos, st.Plugin)
	}
	if v, ok := o.get("with"); ok {
		if m, ok := d.value(v).(map[string]any); ok {
			st.With = m
		} else {
			d.typeError(v, "with", "a mapping")
		}
	}
	st.Run = o.text("run")
	switch {
	case st.Run != "" && st.Plugin != "":
		d.errorf(st.Pos, "step %q has both run and plugin; give one of them", st.Name)
	case st.Run == "" && st.Plugin == "":
		d.errorf(st.Pos, "step %q needs run or plugin", st.Name)
	}
	if v, ok := o.get("shell"); ok {
		st.Shell = d.enum(v, "shell", stepShells)
		d.warnShell(v, st.Shell)
	}
	st.WorkingDir = o.text("working_directory")
	if v, ok := o.get("environment"); ok {
		st.Environment = d.environment(v)
	}
	st.Variables = o.vars()
	st.Secrets = o.secrets()
	if v, ok := o.get("condition"); ok {
		st.Condition = d.condition(v)
	}
	st.Timeout = o.timeout(30 * time.Minute)
	if v, ok := o.get("retry"); ok {
		st.Retry = d.retry(v)
	}
	if v, ok := o.get("continue_on_error"); ok {
		if b, ok := v.(*ast.BoolNode); ok {
			st.ContinueOnError = strconv.FormatBool(b.Value)
		} else if s := d.text(v, "continue_on_error"); s != "true" && s != "false" && !strings.Contains(s, "${{") {
			d.errorf(pos(v), "continue_on_error: expected a boolean or a ${{ }} expression, got %q", s)
		} else {
			st.ContinueOnError = s
		}
	}
	st.Outputs = o.texts("outputs")
	return st
}

// condition decodes a plain string (If) or {if, unless}.
func (d *decoder) condition(n ast.Node) *Condition {
	expression := func(n ast.Node, key string) string {
		s := d.str(n, key)
		d.addText(n, s, true)
		return s
	}
	c := &Condition{Pos: pos(n)}
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		o := d.object(n, "condition", "condition", []string{"if", "unless"})
		if v, ok := o.get("if"); ok {
			c.If = expression(v, "if")
		}
		if v, ok := o.get("unless"); ok {
			c.Unless = expression(v, "unless")
		}
	default:
		c.If = expression(n, "condition")
	}
	return c
}

// vars decodes variables or its alias env: scalars of any type become strings.
func (o *object) vars() Vars {
	f, ok := o.pick("variables", "env")
	if !ok || isNull(f.value) {
		return nil
	}
	fs, _ := o.d.fields(f.value, f.key)
	vars := make(Vars, 0, len(fs))
	for _, kv := range fs {
		var s string
		if !isNull(kv.value) {
			var ok bool
			if s, ok = scalarText(kv.value); !ok {
				o.d.errorf(pos(kv.value), "variable %q: expected a string, number or boolean, got %s", kv.key, kind(kv.value))
				continue
			}
			o.d.addText(kv.value, s, false)
		}
		vars = append(vars, Var{Name: kv.key, Value: s, Pos: kv.pos})
	}
	return vars
}

// timeout decodes timeout_minutes or its alias timeout, which is a duration
// such as 10m or a number of seconds.
func (o *object) timeout(def time.Duration) time.Duration {
	f, ok := o.pick("timeout_minutes", "timeout")
	if !ok || isNull(f.value) {
		return def
	}
	unit := time.Second
	if f.key == "timeout_minutes" {
		unit = time.Minute
	}
	switch x, _ := scalar(f.value); x := x.(type) {
	case int:
		if x < 1 || x > int(maxTimeout/unit) {
			o.d.errorf(pos(f.value), "%s must be between 1 and %d, got %d", f.key, maxTimeout/unit, x)
			return def
		}
		return time.Duration(x) * unit
	case string:
		if f.key == "timeout" {
			t, err := time.ParseDuration(x)
			if err != nil || t <= 0 || t > maxTimeout {
				o.d.errorf(pos(f.value), "timeout: invalid duration %q; want a positive duration such as 10m or a number of seconds", x)
				return def
			}
			return t
		}
	}
	o.d.typeError(f.value, f.key, "an integer")
	return def
}

func (o *object) secrets() []SecretRef {
	v, ok := o.get("secrets")
	if !ok {
		return nil
	}
	var refs []SecretRef
	for _, item := range o.d.list(v, "secrets") {
		s := o.d.object(item, "secrets", "secret", []string{"name", "source", "key", "masked", "required"})
		if s == nil {
			continue
		}
		ref := SecretRef{Pos: s.pos, Key: s.text("key"), Masked: s.boolean("masked", true), Required: s.boolean("required", true)}
		if v, ok := s.required("name"); ok {
			ref.Name = o.d.str(v, "name")
		}
		if v, ok := s.required("source"); ok {
			if src := o.d.object(v, "source", "secret source", []string{"provider", "path", "version"}); src != nil {
				if p, ok := src.required("provider"); ok {
					ref.Provider = o.d.enum(p, "provider", secretProviders)
					o.d.warnSecretProvider(p, ref.Provider, ref.Name)
				}
				ref.Path = src.text("path")
				ref.Version = src.text("version")
			}
		}
		refs = append(refs, ref)
	}
	return refs
}

func (d *decoder) retry(n ast.Node) *Retry {
	o := d.object(n, "retry", "retry", []string{"max_attempts", "delay_seconds", "exponential_backoff", "retry_on"})
	if o == nil {
		return nil
	}
	r := &Retry{
		MaxAttempts:        o.integer("max_attempts", 1, 1, 10),
		Delay:              time.Duration(o.integer("delay_seconds", 10, 0, int(maxTimeout/time.Second))) * time.Second,
		ExponentialBackoff: o.boolean("exponential_backoff", true),
		RetryOn:            []string{"failure"},
	}
	if v, ok := o.get("retry_on"); ok {
		r.RetryOn = nil
		for _, item := range d.list(v, "retry_on") {
			r.RetryOn = append(r.RetryOn, d.enum(item, "retry_on", []string{"failure", "timeout", "cancelled"}))
		}
	}
	return r
}

func (d *decoder) cache(n ast.Node) *Cache {
	o := d.object(n, "cache", "cache", []string{"paths", "key", "restore_keys", "ttl_days"})
	if o == nil {
		return nil
	}
	return &Cache{
		Paths:       o.texts("paths"),
		Key:         o.text("key"),
		RestoreKeys: o.texts("restore_keys"),
		TTLDays:     o.integer("ttl_days", 7, 1, math.MaxInt),
	}
}

func (d *decoder) artifacts(n ast.Node) *Artifacts {
	o := d.object(n, "artifacts", "artifacts", []string{"paths", "name", "retention_days", "compression"})
	if o == nil {
		return nil
	}
	a := &Artifacts{
		Paths:         o.texts("paths"),
		Name:          o.text("name"),
		RetentionDays: o.integer("retention_days", 30, 1, math.MaxInt),
		Compression:   o.enum("compression", "gzip", "zstd", "none"),
	}
	if a.Compression == "" {
		a.Compression = "zstd"
	}
	return a
}

// matrix decodes the three shapes of the reference corpus: the schema's
// {dimensions, include, exclude, fail_fast, max_parallel}, include and
// exclude nested inside dimensions, and dimensions written directly under
// matrix.
func (d *decoder) matrix(n ast.Node) *Matrix {
	fs, ok := d.fields(n, "matrix")
	if !ok {
		return nil
	}
	m := &Matrix{Pos: pos(n), FailFast: true}
	schema := slices.ContainsFunc(fs, func(f field) bool { return f.key == "dimensions" })
	var excluded []field // keys of exclude entries, checked once all dimensions are known
	combos := func(f field) {
		for _, item := range d.list(f.value, f.key) {
			entry, ok := d.fields(item, f.key)
			if !ok {
				continue
			}
			c := make(map[string]any, len(entry))
			for _, e := range entry {
				c[e.key] = d.matrixValue(e.value, e.key)
			}
			if f.key == "include" {
				m.Include = append(m.Include, c)
			} else {
				m.Exclude = append(m.Exclude, c)
				excluded = append(excluded, entry...)
			}
		}
	}
	for _, f := range fs {
		switch f.key {
		case "include", "exclude":
			combos(f)
		case "fail_fast":
			m.FailFast = d.boolean(f.value, f.key, true)
		case "max_parallel":
			m.MaxParallel = d.integer(f.value, f.key, 0, 1, math.MaxInt)
		case "dimensions":
			dims, _ := d.fields(f.value, f.key)
			for _, dim := range dims {
				if dim.key == "include" || dim.key == "exclude" {
					combos(dim)
				} else {
					d.dimension(m, dim, false)
				}
			}
		default:
			if schema {
				d.errorf(f.pos, "unknown key %q in matrix%s", f.key, didYouMean(f.key, matrixKeys))
			} else {
				d.dimension(m, f, true)
			}
		}
	}
	if len(m.Dimensions) == 0 && len(m.Include) == 0 {
		d.errorf(m.Pos, "matrix has no dimensions")
	}
	for _, e := range excluded {
		if !slices.ContainsFunc(m.Dimensions, func(dim Dimension) bool { return dim.Name == e.key }) {
			d.errorf(e.pos, "exclude: %q is not a matrix dimension", e.key)
		}
	}
	return m
}

// dimension decodes one matrix axis. A direct axis whose value is not a
// list and whose name is close to a matrix key is taken for a typo of it.
func (d *decoder) dimension(m *Matrix, f field, direct bool) {
	if _, ok := f.value.(*ast.SequenceNode); !ok && direct {
		if hint := didYouMean(f.key, matrixKeys); hint != "" {
			d.errorf(f.pos, "unknown key %q in matrix%s", f.key, hint)
			return
		}
	}
	items := d.list(f.value, f.key)
	if _, isList := f.value.(*ast.SequenceNode); isList && len(items) == 0 {
		d.errorf(f.pos, "matrix dimension %q has no values", f.key)
	}
	dim := Dimension{Name: f.key}
	for _, item := range items {
		dim.Values = append(dim.Values, d.matrixValue(item, f.key))
	}
	m.Dimensions = append(m.Dimensions, dim)
}

// matrixValue decodes a matrix value, which must be a scalar.
func (d *decoder) matrixValue(n ast.Node, key string) any {
	x, ok := scalar(n)
	if !ok {
		d.errorf(pos(n), "matrix value %q: expected a string, number or boolean, got %s", key, kind(n))
	}
	if s, ok := x.(string); ok {
		d.addText(n, s, false)
	}
	return x
}

func (d *decoder) environment(n ast.Node) *Environment {
	o := d.object(n, "environment", "environment", environmentKeys)
	if o == nil {
		return nil
	}
	e := &Environment{Type: EnvironmentType(o.enum("type", environmentTypes...))}
	if v, ok := o.get("container"); ok {
		e.Container = d.container(v)
	}
	if v, ok := o.get("firecracker"); ok {
		e.Firecracker = d.firecracker(v)
	}
	if v, ok := o.get("nix"); ok {
		e.Nix = d.nix(v)
	}
	if e.Type == "" {
		switch {
		case e.Container == nil && e.Nix != nil && e.Firecracker == nil:
			e.Type = EnvNix
		case e.Container == nil && e.Nix == nil && e.Firecracker != nil:
			e.Type = EnvFirecracker
		default:
			e.Type = EnvContainer
		}
	}
	if e.Type == EnvContainer && (e.Container == nil || e.Container.Image == "") {
		d.errorf(o.pos, "a container environment needs container.image")
	}
	return e
}

func (d *decoder) container(n ast.Node) *Container {
	o := d.object(n, "container", "container", containerKeys)
	if o == nil {
		return nil
	}
	c := &Container{
		Image:        o.text("image"),
		User:         o.text("user"),
		Workdir:      o.text("workdir"),
		Entrypoint:   o.texts("entrypoint"),
		Network:      o.enum("network", "bridge", "host", "none"),
		Privileged:   o.boolean("privileged", false),
		Capabilities: o.texts("capabilities"),
	}
	if v, ok := o.get("shell"); ok {
		c.Shell = d.enum(v, "shell", []string{"bash", "sh", "powershell", "pwsh"})
		d.warnShell(v, c.Shell)
	}
	if v, ok := o.get("registry"); ok {
		if r := d.object(v, "registry", "registry", []string{"url", "username", "password_secret", "aws_ecr", "gcp_gcr"}); r != nil {
			c.Registry = &Registry{
				URL:            r.text("url"),
				Username:       r.text("username"),
				PasswordSecret: r.text("password_secret"),
				AWSECR:         r.boolean("aws_ecr", false),
				GCPGCR:         r.boolean("gcp_gcr", false),
			}
			for key, on := range map[string]bool{"aws_ecr": c.Registry.AWSECR, "gcp_gcr": c.Registry.GCPGCR} {
				if on {
					d.warnf(r.fields[key].pos, "registry.%s logins are not supported yet: give username and password_secret", key)
				}
			}
		}
	}
	if v, ok := o.get("volumes"); ok {
		for _, item := range d.list(v, "volumes") {
			vo := d.object(item, "volumes", "volume", []string{"source", "target", "read_only", "type"})
			if vo == nil {
				continue
			}
			vol := Volume{ReadOnly: vo.boolean("read_only", false), Type: vo.enum("type", "bind", "volume", "tmpfs", "cache")}
			if v, ok := vo.required("source"); ok {
				vol.Source = d.text(v, "source")
			}
			if v, ok := vo.required("target"); ok {
				vol.Target = d.text(v, "target")
			}
			c.Volumes = append(c.Volumes, vol)
		}
	}
	if v, ok := o.get("resources"); ok {
		c.Resources = d.resources(v)
	}
	return c
}

func (d *decoder) resources(n ast.Node) *Resources {
	o := d.object(n, "resources", "resources", []string{"cpu", "memory", "disk", "gpu"})
	if o == nil {
		return nil
	}
	r := &Resources{CPU: o.text("cpu"), Memory: o.text("memory"), Disk: o.text("disk")}
	if v, ok := o.get("gpu"); ok {
		if g := d.object(v, "gpu", "gpu", []string{"count", "vendor", "driver_version"}); g != nil {
			r.GPU = &GPU{
				Count:         g.integer("count", 0, 0, math.MaxInt),
				Vendor:        g.enum("vendor", "nvidia", "amd"),
				DriverVersion: g.text("driver_version"),
			}
		}
	}
	return r
}

func (d *decoder) firecracker(n ast.Node) *Firecracker {
	o := d.object(n, "firecracker", "firecracker", firecrackerKeys)
	if o == nil {
		return nil
	}
	return &Firecracker{
		Kernel:             o.text("kernel"),
		Rootfs:             o.text("rootfs"),
		VCPUCount:          o.integer("vcpu_count", 2, 1, 32),
		MemoryMB:           o.integer("memory_mb", 2048, 128, 32768),
		DiskSizeGB:         o.integer("disk_size_gb", 10, 1, math.MaxInt),
		Network:            o.boolean("network", true),
		BootTimeoutSeconds: o.integer("boot_timeout_seconds", 30, 1, int(maxTimeout/time.Second)),
	}
}

func (d *decoder) nix(n ast.Node) *Nix {
	o := d.object(n, "nix", "nix", nixKeys)
	if o == nil {
		return nil
	}
	return &Nix{
		Flake:             o.text("flake"),
		Packages:          o.texts("packages"),
		ShellHook:         o.text("shell_hook"),
		Pure:              o.boolean("pure", true),
		Sandbox:           o.boolean("sandbox", true),
		Substituters:      o.texts("substituters"),
		TrustedPublicKeys: o.texts("trusted_public_keys"),
	}
}
