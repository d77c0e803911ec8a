// Package dockerinfo is a stand-in for pulumi-docker's provider: the same bridge (pulumi-terraform-bridge) over the same
// upstream (kreuzwerker/terraform-provider-docker), built here because the Go module of pulumi-docker's provider is
// not served by this workplace's Go proxy. The token map reproduces pulumi-docker's names so the pulumi-docker
// Python SDK talks to it unchanged; tests compare the generated schema with the published one.
package dockerinfo

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/terraform-providers/terraform-provider-docker/shim"
)

// Version is set at build time (-X .../dockerinfo.Version=...): the bridge panics on an empty version.
var Version string

func resource(name string) *tfbridge.ResourceInfo {
	return &tfbridge.ResourceInfo{Tok: tfbridge.MakeResource("docker", "index", name)}
}

// ProviderInfo maps the upstream provider onto pulumi-docker's package.
func ProviderInfo() tfbridge.ProviderInfo {
	prov := tfbridge.ProviderInfo{
		P:           shimv2.NewProvider(shim.NewProvider()),
		Name:        "docker",
		Version:     Version,
		Description: "A Pulumi package for interacting with Docker in Pulumi programs",
		Keywords:    []string{"pulumi", "docker"},
		License:     "Apache-2.0",
		Homepage:    "https://pulumi.io",
		Repository:  "https://github.com/pulumi/pulumi-docker",
		Config: map[string]*tfbridge.SchemaInfo{
			// pulumi-docker reads the engine address from DOCKER_HOST like the docker CLI does.
			"host":          {Default: &tfbridge.DefaultInfo{EnvVars: []string{"DOCKER_HOST"}, Value: "unix:///var/run/docker.sock"}},
			"registry_auth": {Name: "registryAuth"},
		},
		// pulumi-docker's names: docker_image is RemoteImage (Image is its native build resource, not bridged)
		// and docker_config is ServiceConfig.
		Resources: map[string]*tfbridge.ResourceInfo{
			"docker_container": {
				Tok: tfbridge.MakeResource("docker", "index", "Container"),
				// pulumi-docker keeps these list names singular.
				Fields: map[string]*tfbridge.SchemaInfo{
					"command":           {Name: "command"},
					"networks_advanced": {Name: "networksAdvanced"},
				},
			},
			"docker_image": {
				Tok: tfbridge.MakeResource("docker", "index", "RemoteImage"),
				// The name is the image reference: never auto-named.
				Fields: map[string]*tfbridge.SchemaInfo{"name": {}},
			},
			"docker_registry_image": resource("RegistryImage"),
			"docker_network":        resource("Network"),
			"docker_volume":         resource("Volume"),
			"docker_config":         resource("ServiceConfig"),
			"docker_secret":         resource("Secret"),
			"docker_service":        resource("Service"),
			"docker_plugin":         resource("Plugin"),
			"docker_tag":            resource("Tag"),
			"docker_buildx_builder": resource("BuildxBuilder"),
		},
		DataSources: map[string]*tfbridge.DataSourceInfo{
			"docker_registry_image":           {Tok: tfbridge.MakeDataSource("docker", "index", "getRegistryImage")},
			"docker_network":                  {Tok: tfbridge.MakeDataSource("docker", "index", "getNetwork")},
			"docker_plugin":                   {Tok: tfbridge.MakeDataSource("docker", "index", "getPlugin")},
			"docker_image":                    {Tok: tfbridge.MakeDataSource("docker", "index", "getRemoteImage")},
			"docker_logs":                     {Tok: tfbridge.MakeDataSource("docker", "index", "getLogs")},
			"docker_registry_image_manifests": {Tok: tfbridge.MakeDataSource("docker", "index", "getRegistryImageManifests")},
		},
		Python: &tfbridge.PythonInfo{},
	}
	// As pulumi-docker does: an omitted `name` is derived from the resource name plus a random suffix.
	prov.SetAutonaming(255, "-")
	return prov
}
