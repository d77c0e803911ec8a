// Package shim exposes the upstream SDKv2 provider to the bridge. It is copied into a writable copy of the
// upstream module at build time because Go lets only packages inside that module import its internal/ tree.
package shim

import (
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	"github.com/terraform-providers/terraform-provider-docker/internal/provider"
)

// NewProvider returns the upstream provider; its own version string is not used by the bridge.
func NewProvider() *schema.Provider {
	return provider.New("dev")()
}
