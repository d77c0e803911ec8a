// Command pulumi-resource-docker serves the docker stand-in to the Pulumi engine.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"

	"swarmestate.local/toolchain/docker/dockerinfo"
)

// schema-embed.json is written by the build from pulumi-tfgen-docker's output; it is not committed.
//
//go:embed schema-embed.json
var schema []byte

func main() {
	tfbridge.Main("docker", dockerinfo.Version, dockerinfo.ProviderInfo(), schema)
}
