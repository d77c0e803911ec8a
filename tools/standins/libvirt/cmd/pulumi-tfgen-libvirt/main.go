// Command pulumi-tfgen-libvirt generates the Pulumi schema of the libvirt stand-in (run once per build).
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"

	"swarmestate.local/toolchain/libvirt/libvirtinfo"
)

func main() {
	tfgen.Main("libvirt", libvirtinfo.Version, libvirtinfo.ProviderInfo())
}
