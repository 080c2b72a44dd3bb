package spec

// EnvironmentType says where steps execute.
type EnvironmentType string

// Environment types of the reference schema.
const (
	EnvHost        EnvironmentType = "host"
	EnvContainer   EnvironmentType = "container"
	EnvNix         EnvironmentType = "nix"
	EnvFirecracker EnvironmentType = "firecracker"
)

// Environment is where a stage's steps execute.
type Environment struct {
	Type        EnvironmentType `json:"type"` // default container
	Container   *Container      `json:"container,omitempty"`
	Nix         *Nix            `json:"nix,omitempty"`
	Firecracker *Firecracker    `json:"firecracker,omitempty"`
}

// Container configures the container environment.
type Container struct {
	Image        string     `json:"image"`
	Registry     *Registry  `json:"registry,omitempty"`
	Shell        string     `json:"shell,omitempty"`
	User         string     `json:"user,omitempty"`
	Workdir      string     `json:"workdir,omitempty"`
	Entrypoint   []string   `json:"entrypoint,omitempty"`
	Volumes      []Volume   `json:"volumes,omitempty"`
	Network      string     `json:"network,omitempty"` // bridge (default), host, none
	Privileged   bool       `json:"privileged,omitempty"`
	Capabilities []string   `json:"capabilities,omitempty"`
	Resources    *Resources `json:"resources,omitempty"`
}

// Registry holds credentials for pulling a container image.
type Registry struct {
	URL            string `json:"url,omitempty"`
	Username       string `json:"username,omitempty"`
	PasswordSecret string `json:"password_secret,omitempty"`
	AWSECR         bool   `json:"aws_ecr,omitempty"`
	GCPGCR         bool   `json:"gcp_gcr,omitempty"`
}

// Volume is a mount into the container.
type Volume struct {
	Source   string `json:"source,omitempty"`
	Target   string `json:"target,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Type     string `json:"type,omitempty"` // bind (default), volume, tmpfs, cache
}

// Resources are limits for a container or job.
type Resources struct {
	CPU    string `json:"cpu,omitempty"`    // "2", "500m"
	Memory string `json:"memory,omitempty"` // "4Gi", "512Mi"
	Disk   string `json:"disk,omitempty"`
	GPU    *GPU   `json:"gpu,omitempty"`
}

// GPU asks for accelerators.
type GPU struct {
	Count         int    `json:"count,omitempty"`
	Vendor        string `json:"vendor,omitempty"`
	DriverVersion string `json:"driver_version,omitempty"`
}

// Nix configures the nix environment.
type Nix struct {
	Flake        string   `json:"flake,omitempty"`
	Packages     []string `json:"packages,omitempty"`
	ShellHook    string   `json:"shell_hook,omitempty"`
	Pure         bool     `json:"pure,omitempty"`
	Sandbox      bool     `json:"sandbox,omitempty"`
	Substituters []string `json:"substituters,omitempty"`
	// TrustedPublicKeys sign the substituters' binary caches.
	TrustedPublicKeys []string `json:"trusted_public_keys,omitempty"`
}

// Firecracker configures the microVM environment.
type Firecracker struct {
	Kernel             string `json:"kernel,omitempty"`
	Rootfs             string `json:"rootfs,omitempty"`
	VCPUCount          int    `json:"vcpu_count,omitempty"`
	MemoryMB           int    `json:"memory_mb,omitempty"`
	DiskSizeGB         int    `json:"disk_size_gb,omitempty"`
	Network            bool   `json:"network,omitempty"`
	BootTimeoutSeconds int    `json:"boot_timeout_seconds,omitempty"`
}
