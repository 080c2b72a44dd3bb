package pipeline

import (
	"slices"

	"github.com/goccy/go-yaml/ast"
)

// The warnings below name what the reference schema accepts and Oxide does
// not do yet. Remove an entry when what it names starts to work.

// cacheWarning and artifactsWarning are given for both levels.
const (
	cacheWarning     = "cache is not supported yet: nothing is restored or saved"
	artifactsWarning = "artifacts are not supported yet: nothing is uploaded or kept"
)

// unsupportedKeys are the keys whose mere presence is warned about, by the
// object they belong to, with the warning.
var unsupportedKeys = map[string]map[string]string{
	"pipeline": {
		"triggers":  "triggers are not matched yet: a run starts only when asked for (oxide run, or the server's API)",
		"cache":     cacheWarning,
		"artifacts": artifactsWarning,
	},
	"stage": {
		"cache":     cacheWarning,
		"artifacts": artifactsWarning,
	},
	"step":          {"environment": "a step's environment is not supported yet: the step runs in its stage's environment"},
	"agent":         {"name": "agent.name is not supported yet: select agents with agent.labels"},
	"resources":     {"disk": "resources.disk is not supported yet: the disk is not limited"},
	"gpu":           {"vendor": "gpu.vendor is not supported yet: any GPU the engine offers is used", "driver_version": "gpu.driver_version is not supported yet: it is not checked"},
	"secret source": {"version": "secret versions are not supported yet: the current value is used"},
}

// availableSecretProviders are the secret providers that Oxide has.
var availableSecretProviders = []string{"oxide", "environment"}

// warnPlugin warns that the plugin step at p cannot run.
func (d *decoder) warnPlugin(p Pos, plugin string) {
	d.warnf(p, "plugin steps are not available yet: the step fails when it runs (%s)", plugin)
}

// warnShell warns about a shell that no environment runs; n is its value.
func (d *decoder) warnShell(n ast.Node, shell string) {
	if shell == "pwsh" || shell == "powershell" {
		d.warnf(pos(n), "shell %s is not supported yet: steps run with bash, sh or python", shell)
	}
}

// warnSecretProvider warns about a provider that Oxide does not have; n
// is its value.
func (d *decoder) warnSecretProvider(n ast.Node, provider, name string) {
	if slices.Contains(secretProviders, provider) && !slices.Contains(availableSecretProviders, provider) {
		d.warnf(pos(n), "secret provider %s is not available yet: on a server the stage fails; oxide run takes %s from --secret %s=… or --secrets-file",
			provider, name, name)
	}
}

// warnEnvironment warns about environment types that no runner provides;
// p is the environment's position.
func (d *decoder) warnEnvironment(p Pos, e *Environment) {
	if e != nil && (e.Type == EnvNix || e.Type == EnvFirecracker) {
		d.warnf(p, "%s environments are not available yet: no agent provides one; oxide run --environment host runs the steps on this machine", e.Type)
	}
}
