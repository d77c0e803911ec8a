// Package lifecycle holds the create/update/delete flow that command:local:Command
// and command:remote:Command share; the resources differ only in how a command
// is run, which their state's Run supplies.
package lifecycle

import (
	"context"

	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Commands are the inputs that drive the lifecycle. Resource inputs embed it,
// which keeps these fields (and their schema) the same in both resources.
type Commands struct {
	Triggers *[]any  `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	Create   *string `pulumi:"create,optional"`
	Update   *string `pulumi:"update,optional"`
	Delete   *string `pulumi:"delete,optional"`
}

func (c *Commands) Annotate(a infer.Annotator) {
	a.Describe(&c.Triggers, "Values of any type; a change to any of them replaces the resource.")
	a.Describe(&c.Create, "The command to run when the resource is created. "+
		"Also run on update when `update` is not set.")
	a.Describe(&c.Update, "The command to run when the inputs change. If unset, `create` is run instead. "+
		"PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR hold the previous run's output.")
	a.Describe(&c.Delete, "The command to run when the resource is deleted. "+
		"PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR hold the previous run's output.")
}

// commands is promoted through the embedding, so Controller can read the
// commands of any resource's inputs or state without it declaring a method.
func (c Commands) commands() Commands { return c }

// Mirror makes each state field depend on the input it echoes, the commands
// first, and returns those inputs for the outputs that depend on all of them.
// infer does the mirroring by default, but declaring any flow turns that off.
func Mirror(f infer.FieldSelector, args, state *Commands, pairs [][2]any) []infer.InputField {
	pairs = append([][2]any{
		{&args.Triggers, &state.Triggers},
		{&args.Create, &state.Create},
		{&args.Update, &state.Update},
		{&args.Delete, &state.Delete},
	}, pairs...)
	inputs := make([]infer.InputField, 0, len(pairs))
	for _, pr := range pairs {
		in := f.InputField(pr[0])
		f.OutputField(pr[1]).DependsOn(in)
		inputs = append(inputs, in)
	}
	return inputs
}

// State is satisfied by *S, the checkpointed state of a command resource: its
// inputs A (embedding Commands) followed by the results of the last run.
type State[A, S any] interface {
	*S
	commands() Commands
	// SetInputs replaces the inputs and keeps the results, so that update and
	// delete commands still see the previous output.
	SetInputs(A)
	// Run runs command and records its results only if it succeeds; on failure
	// the state keeps the previous results, as the engine does.
	Run(ctx context.Context, command string) error
}

// Controller gives a resource controller, by embedding, the Create, Update and
// Delete both command resources have.
type Controller[A, S any, P State[A, S]] struct{}

// Create runs `create`. During preview nothing runs; infer reports the results
// as unknown because they depend on the inputs.
func (Controller[A, S, P]) Create(ctx context.Context, req infer.CreateRequest[A]) (infer.CreateResponse[S], error) {
	var state S
	P(&state).SetInputs(req.Inputs)
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil {
		return infer.CreateResponse[S]{}, err
	}
	create := P(&state).commands().Create
	if req.DryRun || create == nil {
		return infer.CreateResponse[S]{ID: id, Output: state}, nil
	}
	err = P(&state).Run(ctx, *create)
	return infer.CreateResponse[S]{ID: id, Output: state}, err
}

// Update runs `update`, or `create` when there is no `update`. The previous
// results stay in state so they reach the command's environment and survive if
// neither command is set.
func (Controller[A, S, P]) Update(ctx context.Context, req infer.UpdateRequest[A, S]) (infer.UpdateResponse[S], error) {
	state := req.State
	P(&state).SetInputs(req.Inputs)
	if req.DryRun {
		return infer.UpdateResponse[S]{Output: state}, nil
	}
	c := P(&state).commands()
	cmd := c.Update
	if cmd == nil {
		cmd = c.Create
	}
	if cmd == nil {
		return infer.UpdateResponse[S]{Output: state}, nil
	}
	err := P(&state).Run(ctx, *cmd)
	return infer.UpdateResponse[S]{Output: state}, err
}

// Delete runs the `delete` recorded in state (the last applied inputs), since
// the program may no longer declare the resource.
func (Controller[A, S, P]) Delete(ctx context.Context, req infer.DeleteRequest[S]) (infer.DeleteResponse, error) {
	state := req.State
	del := P(&state).commands().Delete
	if del == nil {
		return infer.DeleteResponse{}, nil
	}
	return infer.DeleteResponse{}, P(&state).Run(ctx, *del)
}
