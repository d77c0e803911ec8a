// Command pulumi-resource-command is a stand-in for the pulumi-command 1.2.1
// resource provider: it serves command:local:Command and command:remote:Command
// with the same schema shape and lifecycle semantics.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/property"

	"swarmestate.local/standins/command/internal/execlog"
	"swarmestate.local/standins/command/local"
	"swarmestate.local/standins/command/remote"
)

// Version is reported to the engine (GetPluginInfo) and in the schema. Release
// builds set it with -ldflags "-X main.Version=1.2.1".
var Version = "0.0.0-dev"

func main() {
	prov, err := infer.NewProviderBuilder().
		WithDisplayName("Command").
		WithDescription("Run commands locally or on remote hosts over SSH as part of the Pulumi resource model "+
			"(stand-in for pulumi-command 1.2.1).").
		WithKeywords("pulumi", "command", "category/utility", "kind/native").
		WithResources(
			infer.Resource(&local.Command{}),
			infer.Resource(&remote.Command{}),
		).
		WithFunctions(infer.Function(&local.Run{})).
		Build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building provider: %v\n", err)
		os.Exit(1)
	}
	if err := p.RunProvider(context.Background(), "command", Version, withCommandSemantics(prov)); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		os.Exit(1)
	}
}

// withCommandSemantics adds what infer cannot express:
//
//   - Diff: infer forces a replace only when the top-level key is flagged, but
//     a changed trigger shows up as "triggers[0]". Any change under triggers
//     must replace, whichever SDK (and whether it sets replaceOnChanges).
//   - Create/Update/Delete: whether the request carries secret inputs, so the
//     command runner can keep output and command text out of the logs.
func withCommandSemantics(prov p.Provider) p.Provider {
	diff := prov.Diff
	prov.Diff = func(ctx context.Context, req p.DiffRequest) (p.DiffResponse, error) {
		resp, err := diff(ctx, req)
		if err != nil {
			return resp, err
		}
		for k, d := range resp.DetailedDiff {
			if k == "triggers" || strings.HasPrefix(k, "triggers[") || strings.HasPrefix(k, "triggers.") {
				d.Kind = asReplace(d.Kind)
				resp.DetailedDiff[k] = d
			}
		}
		return resp, nil
	}

	create := prov.Create
	prov.Create = func(ctx context.Context, req p.CreateRequest) (p.CreateResponse, error) {
		return create(execlog.WithSecretInputs(ctx, hasSecrets(req.Properties)), req)
	}
	update := prov.Update
	prov.Update = func(ctx context.Context, req p.UpdateRequest) (p.UpdateResponse, error) {
		secret := hasSecrets(req.Inputs) || hasSecrets(req.State)
		return update(execlog.WithSecretInputs(ctx, secret), req)
	}
	del := prov.Delete
	prov.Delete = func(ctx context.Context, req p.DeleteRequest) error {
		return del(execlog.WithSecretInputs(ctx, hasSecrets(req.Properties)), req)
	}
	return prov
}

// hasSecrets reports secrets anywhere except under "connection": the SDK always
// marks the remote connection secret, and it does not reach the command's text
// or output, so counting it would silence every remote command's log.
func hasSecrets(m property.Map) bool {
	for k, v := range m.All {
		if k != "connection" && v.HasSecrets() {
			return true
		}
	}
	return false
}

func asReplace(k p.DiffKind) p.DiffKind {
	switch k {
	case p.Add:
		return p.AddReplace
	case p.Delete:
		return p.DeleteReplace
	case p.Update:
		return p.UpdateReplace
	}
	return k
}
