// Package remote implements command:remote:Command over SSH. The Go package
// name is the schema module ("command:remote:...").
package remote

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"swarmestate.local/standins/command/internal/execlog"
)

// Logging selects which streams are forwarded to the engine's log.
type Logging string

// Values makes Logging a schema enum (token command:remote:Logging).
func (Logging) Values() []infer.EnumValue[Logging] {
	return []infer.EnumValue[Logging]{
		{Name: "stdout", Value: "stdout", Description: "Capture stdout in logs but not stderr"},
		{Name: "stderr", Value: "stderr", Description: "Capture stderr in logs but not stdout"},
		{Name: "stdoutAndStderr", Value: "stdoutAndStderr", Description: "Capture stdout and stderr in logs"},
		{Name: "none", Value: "none", Description: "Capture no logs"},
	}
}

// Command is the resource controller; it holds no state of its own.
type Command struct{}

func (c *Command) Annotate(a infer.Annotator) {
	a.Describe(&c, "A command run on a remote host over SSH. "+
		"A non-zero exit status fails the create, update or delete step.")
}

// CommandArgs are the inputs. connection is secret as a whole because it
// carries credentials; the SDK also wraps it in a secret.
type CommandArgs struct {
	Triggers               *[]any             `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	Create                 *string            `pulumi:"create,optional"`
	Update                 *string            `pulumi:"update,optional"`
	Delete                 *string            `pulumi:"delete,optional"`
	Stdin                  *string            `pulumi:"stdin,optional"`
	Logging                *Logging           `pulumi:"logging,optional"`
	Connection             *Connection        `pulumi:"connection" provider:"secret"`
	Environment            *map[string]string `pulumi:"environment,optional"`
	AddPreviousOutputInEnv *bool              `pulumi:"addPreviousOutputInEnv,optional"`
}

func (c *CommandArgs) Annotate(a infer.Annotator) {
	a.Describe(&c.Triggers, "Values of any type; a change to any of them replaces the resource.")
	a.Describe(&c.Create, "The command to run when the resource is created. "+
		"Also run on update when `update` is not set.")
	a.Describe(&c.Update, "The command to run when the inputs change. If unset, `create` is run instead. "+
		"PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR hold the previous run's output.")
	a.Describe(&c.Delete, "The command to run when the resource is deleted. "+
		"PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR hold the previous run's output.")
	a.Describe(&c.Stdin, "A string passed to the command's standard input.")
	a.Describe(&c.Logging, "Which output streams are logged; stdout and stderr are captured as outputs either way. "+
		"Defaults to stdoutAndStderr.")
	a.Describe(&c.Connection, "How to reach the remote host.")
	a.Describe(&c.Environment, "Extra environment variables, sent with SSH `env` requests. "+
		"The server only accepts names listed in its AcceptEnv; otherwise the step fails. "+
		"With a Bash-like shell the command can instead be prefixed with VAR=value.")
	a.Describe(&c.AddPreviousOutputInEnv, "Whether PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR are set "+
		"for update and delete. Defaults to true.")
}

// CommandState is what is checkpointed: the inputs plus the run's results.
type CommandState struct {
	CommandArgs
	Stdout string `pulumi:"stdout"`
	Stderr string `pulumi:"stderr"`
}

func (c *CommandState) Annotate(a infer.Annotator) {
	a.Describe(&c.Stdout, "The standard output of the last create or update run.")
	a.Describe(&c.Stderr, "The standard error of the last create or update run.")
}

// WireDependencies: stdout/stderr become secret when any input other than the
// connection is secret. The connection is left out of the secret flow only:
// the SDK always marks it secret, so counting it would make every remote
// output secret, and it feeds the transport rather than the command's text.
// A connection change still makes the outputs unknown during preview.
func (*Command) WireDependencies(f infer.FieldSelector, args *CommandArgs, state *CommandState) {
	pairs := []struct{ in, out any }{
		{&args.Triggers, &state.Triggers},
		{&args.Create, &state.Create},
		{&args.Update, &state.Update},
		{&args.Delete, &state.Delete},
		{&args.Stdin, &state.Stdin},
		{&args.Logging, &state.Logging},
		{&args.Environment, &state.Environment},
		{&args.AddPreviousOutputInEnv, &state.AddPreviousOutputInEnv},
	}
	inputs := make([]infer.InputField, 0, len(pairs)+1)
	for _, pr := range pairs {
		in := f.InputField(pr.in)
		f.OutputField(pr.out).DependsOn(in)
		inputs = append(inputs, in)
	}
	conn := f.InputField(&args.Connection)
	f.OutputField(&state.Connection).DependsOn(conn)
	f.OutputField(&state.Connection).AlwaysSecret()
	inputs = append(inputs, conn.Computed())
	f.OutputField(&state.Stdout).DependsOn(inputs...)
	f.OutputField(&state.Stderr).DependsOn(inputs...)
}

// Create runs `create` on the host; nothing runs during preview.
func (*Command) Create(ctx context.Context, req infer.CreateRequest[CommandArgs]) (infer.CreateResponse[CommandState], error) {
	state := CommandState{CommandArgs: req.Inputs}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil {
		return infer.CreateResponse[CommandState]{}, err
	}
	if req.DryRun || req.Inputs.Create == nil {
		return infer.CreateResponse[CommandState]{ID: id, Output: state}, nil
	}
	err = state.run(ctx, *req.Inputs.Create)
	return infer.CreateResponse[CommandState]{ID: id, Output: state}, err
}

// Update runs `update`, or `create` when there is no `update`, with the
// previous results available as PULUMI_COMMAND_STDOUT/STDERR.
func (*Command) Update(ctx context.Context, req infer.UpdateRequest[CommandArgs, CommandState]) (infer.UpdateResponse[CommandState], error) {
	state := req.State
	state.CommandArgs = req.Inputs
	if req.DryRun {
		return infer.UpdateResponse[CommandState]{Output: state}, nil
	}
	cmd := req.Inputs.Update
	if cmd == nil {
		cmd = req.Inputs.Create
	}
	if cmd == nil {
		return infer.UpdateResponse[CommandState]{Output: state}, nil
	}
	err := state.run(ctx, *cmd)
	return infer.UpdateResponse[CommandState]{Output: state}, err
}

// Delete runs the `delete` recorded in state, over the recorded connection.
func (*Command) Delete(ctx context.Context, req infer.DeleteRequest[CommandState]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	state := req.State
	return infer.DeleteResponse{}, state.run(ctx, *req.State.Delete)
}

func (s *CommandState) run(ctx context.Context, command string) error {
	if s.Connection == nil {
		return errors.New("connection is required")
	}
	client, closeAll, err := s.Connection.dial(ctx)
	if err != nil {
		return err
	}
	defer closeAll()

	session, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("opening SSH session: %w", err)
	}
	defer session.Close()

	if s.Environment != nil {
		keys := make([]string, 0, len(*s.Environment))
		for k := range *s.Environment {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := session.Setenv(k, (*s.Environment)[k]); err != nil {
				return fmt.Errorf("could not set environment variable %q: %w; the SSH server only "+
					"accepts variables listed in its AcceptEnv (alternatively prefix the command "+
					"with VAR=value)", k, err)
			}
		}
	}
	// Best effort, as in pulumi-command: a server that refuses these still runs
	// the command, the user just gets a warning.
	for _, kv := range execlog.PreviousOutputEnv(s.AddPreviousOutputInEnv, s.Stdout, s.Stderr) {
		if err := session.Setenv(kv[0], kv[1]); err != nil {
			p.GetLogger(ctx).Warningf("could not set %s on the remote host (add it to the SSH "+
				"server's AcceptEnv to make it available): %v", kv[0], err)
		}
	}
	if s.Stdin != nil && *s.Stdin != "" {
		session.Stdin = strings.NewReader(*s.Stdin)
	}

	var logging *string
	if s.Logging != nil {
		l := string(*s.Logging)
		logging = &l
	}
	capture := execlog.NewCapture(ctx, execlog.StreamsFor(logging))
	session.Stdout = capture.Stdout()
	session.Stderr = capture.Stderr()

	// session.Run does not watch ctx; closing the client on cancellation makes
	// it return instead of hanging on an unresponsive host.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			client.Close()
		case <-done:
		}
	}()

	err = session.Run(command)
	capture.Flush()
	if err != nil {
		return capture.Failure(err, command)
	}
	s.Stdout, s.Stderr = capture.Outputs()
	return nil
}
