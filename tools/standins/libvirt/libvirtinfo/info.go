// Package libvirtinfo is a stand-in for pulumi-libvirt's provider: the same bridge (pulumi-terraform-bridge) over
// the same upstream (dmacvicar/terraform-provider-libvirt), built here because the Go module of pulumi-libvirt's
// provider is not served by this workplace's Go proxy. pulumi-libvirt 0.5.4 bridges upstream v0.8.1, which is not
// served either; v0.8.3 (the last 0.8 release, bug fixes on top of v0.8.1) is. The token map reproduces
// pulumi-libvirt's names so its Python SDK talks to it unchanged; tests compare the generated schema with the
// published one.
package libvirtinfo

import (
	"unicode"

	"github.com/dmacvicar/terraform-provider-libvirt/libvirt"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
)

// Version is set at build time (-X .../libvirtinfo.Version=...): the bridge panics on an empty version.
var Version string

func resource(name string) *tfbridge.ResourceInfo {
	return &tfbridge.ResourceInfo{Tok: tfbridge.MakeResource("libvirt", "index", name)}
}

func function(name string) *tfbridge.DataSourceInfo {
	lower := string(unicode.ToLower(rune(name[0]))) + name[1:]
	return &tfbridge.DataSourceInfo{Tok: tfbridge.MakeDataSource("libvirt", "index", lower)}
}

// ProviderInfo maps the upstream provider onto pulumi-libvirt's package.
func ProviderInfo() tfbridge.ProviderInfo {
	prov := tfbridge.ProviderInfo{
		P:           shimv2.NewProvider(libvirt.Provider()),
		Name:        "libvirt",
		Version:     Version,
		Description: "A Pulumi package for creating and managing libvirt cloud resources.",
		Keywords:    []string{"pulumi", "libvirt"},
		License:     "Apache-2.0",
		Homepage:    "https://pulumi.io",
		Repository:  "https://github.com/pulumi/pulumi-libvirt",
		GitHubOrg:   "dmacvicar",
		Config: map[string]*tfbridge.SchemaInfo{
			"uri": {Default: &tfbridge.DefaultInfo{EnvVars: []string{"LIBVIRT_DEFAULT_URI"}}},
		},
		Resources: map[string]*tfbridge.ResourceInfo{
			"libvirt_cloudinit_disk": resource("CloudInitDisk"),
			"libvirt_combustion":     resource("Combustion"),
			"libvirt_domain":         resource("Domain"),
			"libvirt_ignition":       resource("Ignition"),
			"libvirt_network":        resource("Network"),
			"libvirt_pool":           resource("Pool"),
			"libvirt_volume":         resource("Volume"),
		},
		DataSources: map[string]*tfbridge.DataSourceInfo{
			"libvirt_network_dns_host_template":        function("getNetworkDnsHostTemplate"),
			"libvirt_network_dns_srv_template":         function("getNetworkDnsSrvTemplate"),
			"libvirt_network_dnsmasq_options_template": function("getNetworkDnsmasqOptionsTemplate"),
			"libvirt_node_device_info":                 function("getNodeDeviceInfo"),
			"libvirt_node_devices":                     function("getNodeDevices"),
			"libvirt_node_info":                        function("getNodeInfo"),
		},
		Python: &tfbridge.PythonInfo{},
	}
	// As pulumi-libvirt does: an omitted `name` is derived from the resource name plus a random suffix.
	prov.SetAutonaming(255, "-")
	return prov
}
