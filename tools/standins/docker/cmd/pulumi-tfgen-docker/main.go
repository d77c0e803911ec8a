// Command pulumi-tfgen-docker generates the Pulumi schema of the docker stand-in (run once per build).
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"

	"swarmestate.local/toolchain/docker/dockerinfo"
)

func main() {
	tfgen.Main("docker", dockerinfo.Version, dockerinfo.ProviderInfo())
}
