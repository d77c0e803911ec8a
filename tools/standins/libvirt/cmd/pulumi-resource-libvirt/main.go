// Command pulumi-resource-libvirt serves the libvirt stand-in to the Pulumi engine.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"

	"swarmestate.local/toolchain/libvirt/libvirtinfo"
)

// schema-embed.json is written by the build from pulumi-tfgen-libvirt's output; it is not committed.
//
//go:embed schema-embed.json
var schema []byte

func main() {
	tfbridge.Main("libvirt", libvirtinfo.Version, libvirtinfo.ProviderInfo(), schema)
}
