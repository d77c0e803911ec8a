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

	"swarmestate.local/standins/command/internal/execlog"
	"swarmestate.local/standins/command/internal/lifecycle"
)

// Logging selects which streams are forwarded to the engine's log.
type Logging string

// Values makes Logging a schema enum (token command:remote:Logging).
func (Logging) Values() []infer.EnumValue[Logging] { return execlog.LoggingValues[Logging]() }

// Command is the resource controller; it holds no state of its own. Create,
// Update and Delete come from the lifecycle shared with command:local:Command;
// CommandState.Run is the SSH part, so delete reaches the host recorded in state.
type Command struct {
	lifecycle.Controller[CommandArgs, CommandState, *CommandState]
}

func (c *Command) Annotate(a infer.Annotator) {
	a.Describe(&c, "A command run on a remote host over SSH. "+
		"A non-zero exit status fails the create, update or delete step.")
}

// CommandArgs are the inputs. connection is secret as a whole because it
// carries credentials; the SDK also wraps it in a secret.
type CommandArgs struct {
	lifecycle.Commands
	Stdin                  *string            `pulumi:"stdin,optional"`
	Logging                *Logging           `pulumi:"logging,optional"`
	Connection             *Connection        `pulumi:"connection" provider:"secret"`
	Environment            *map[string]string `pulumi:"environment,optional"`
	AddPreviousOutputInEnv *bool              `pulumi:"addPreviousOutputInEnv,optional"`
}

func (c *CommandArgs) Annotate(a infer.Annotator) {
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
	inputs := lifecycle.Mirror(f, &args.Commands, &state.Commands, [][2]any{
		{&args.Stdin, &state.Stdin},
		{&args.Logging, &state.Logging},
		{&args.Environment, &state.Environment},
		{&args.AddPreviousOutputInEnv, &state.AddPreviousOutputInEnv},
	})
	conn := f.InputField(&args.Connection)
	f.OutputField(&state.Connection).DependsOn(conn)
	f.OutputField(&state.Connection).AlwaysSecret()
	inputs = append(inputs, conn.Computed())
	f.OutputField(&state.Stdout).DependsOn(inputs...)
	f.OutputField(&state.Stderr).DependsOn(inputs...)
}

// SetInputs lets the shared lifecycle replace the inputs without knowing the
// layout of the state.
func (s *CommandState) SetInputs(in CommandArgs) { s.CommandArgs = in }

// Run executes command on the host and, like the local Run, records its output
// only if it succeeds.
func (s *CommandState) Run(ctx context.Context, command string) error {
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

	capture := execlog.NewCapture(ctx, execlog.StreamsFor(s.Logging))
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
