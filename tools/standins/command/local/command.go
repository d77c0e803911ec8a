// Package local implements command:local:Command. The Go package name is the
// schema module: infer derives the token "command:local:Command" from it.
package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"swarmestate.local/standins/command/internal/execlog"
)

// Logging selects which streams are forwarded to the engine's log.
type Logging string

// Values makes Logging a schema enum (token command:local:Logging).
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
	a.Describe(&c, "A command run on the machine where Pulumi runs. "+
		"A non-zero exit code fails the create, update or delete step.")
}

// CommandArgs are the inputs. Every field is optional, as in pulumi-command.
type CommandArgs struct {
	Triggers               *[]any             `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	Create                 *string            `pulumi:"create,optional"`
	Update                 *string            `pulumi:"update,optional"`
	Delete                 *string            `pulumi:"delete,optional"`
	Stdin                  *string            `pulumi:"stdin,optional"`
	Logging                *Logging           `pulumi:"logging,optional"`
	Interpreter            *[]string          `pulumi:"interpreter,optional"`
	Dir                    *string            `pulumi:"dir,optional"`
	Environment            *map[string]string `pulumi:"environment,optional"`
	AssetPaths             *[]string          `pulumi:"assetPaths,optional"`
	ArchivePaths           *[]string          `pulumi:"archivePaths,optional"`
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
	a.Describe(&c.Interpreter, "The program and arguments used to run the command. Defaults to [\"/bin/sh\", \"-c\"].")
	a.Describe(&c.Dir, "The working directory of the command; it must exist. Defaults to the provider's working directory.")
	a.Describe(&c.Environment, "Extra environment variables for the command's process.")
	a.Describe(&c.AssetPaths, "Path globs, relative to `dir`, of files returned as `assets` after the command ran.")
	a.Describe(&c.ArchivePaths, "Path globs, relative to `dir`, of files returned as one `archive` after the command ran.")
	a.Describe(&c.AddPreviousOutputInEnv, "Whether PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR are set "+
		"for update and delete. Defaults to true.")
}

// CommandState is what is checkpointed: the inputs plus the run's results.
type CommandState struct {
	CommandArgs
	Stdout  string                      `pulumi:"stdout"`
	Stderr  string                      `pulumi:"stderr"`
	Assets  *map[string]*resource.Asset `pulumi:"assets,optional"`
	Archive *resource.Archive           `pulumi:"archive,optional"`
}

func (c *CommandState) Annotate(a infer.Annotator) {
	a.Describe(&c.Stdout, "The standard output of the last create or update run.")
	a.Describe(&c.Stderr, "The standard error of the last create or update run.")
	a.Describe(&c.Assets, "The files matched by `assetPaths`, keyed by path relative to `dir`.")
	a.Describe(&c.Archive, "An archive of the files matched by `archivePaths`.")
}

// WireDependencies makes stdout/stderr (and the assets) secret when any input is
// secret, because the command may print what it was given; infer's default
// only carries secretness between same-named fields. Declaring any flow turns
// the defaults off, so the mirrored inputs are wired to themselves too.
func (*Command) WireDependencies(f infer.FieldSelector, args *CommandArgs, state *CommandState) {
	pairs := []struct{ in, out any }{
		{&args.Triggers, &state.Triggers},
		{&args.Create, &state.Create},
		{&args.Update, &state.Update},
		{&args.Delete, &state.Delete},
		{&args.Stdin, &state.Stdin},
		{&args.Logging, &state.Logging},
		{&args.Interpreter, &state.Interpreter},
		{&args.Dir, &state.Dir},
		{&args.Environment, &state.Environment},
		{&args.AssetPaths, &state.AssetPaths},
		{&args.ArchivePaths, &state.ArchivePaths},
		{&args.AddPreviousOutputInEnv, &state.AddPreviousOutputInEnv},
	}
	inputs := make([]infer.InputField, 0, len(pairs))
	for _, pr := range pairs {
		in := f.InputField(pr.in)
		f.OutputField(pr.out).DependsOn(in)
		inputs = append(inputs, in)
	}
	for _, out := range []any{&state.Stdout, &state.Stderr, &state.Assets, &state.Archive} {
		f.OutputField(out).DependsOn(inputs...)
	}
}

// Create runs `create`. During preview nothing runs; infer reports the results
// as unknown because they depend on the inputs.
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

// Update runs `update`, or `create` when there is no `update`. The previous
// results are kept in state first so they reach the command's environment and
// survive if neither command is set.
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

// Delete runs the `delete` recorded in state (the last applied inputs).
func (*Command) Delete(ctx context.Context, req infer.DeleteRequest[CommandState]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	state := req.State
	return infer.DeleteResponse{}, state.run(ctx, *req.State.Delete)
}

// run executes command and, on success, records its output (and any assets) in
// s. On failure s keeps its previous results, which is what the engine keeps too.
func (s *CommandState) run(ctx context.Context, command string) error {
	argv := []string{"/bin/sh", "-c"}
	if s.Interpreter != nil && len(*s.Interpreter) > 0 {
		argv = append([]string(nil), *s.Interpreter...)
	}
	argv = append(argv, command)

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if s.Dir != nil {
		cmd.Dir = *s.Dir
	} else {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		cmd.Dir = wd
	}

	cmd.Env = os.Environ()
	if s.Environment != nil {
		for k, v := range *s.Environment {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	for _, kv := range execlog.PreviousOutputEnv(s.AddPreviousOutputInEnv, s.Stdout, s.Stderr) {
		cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
	}
	if s.Stdin != nil && *s.Stdin != "" {
		cmd.Stdin = strings.NewReader(*s.Stdin)
	}

	var logging *string
	if s.Logging != nil {
		l := string(*s.Logging)
		logging = &l
	}
	capture := execlog.NewCapture(ctx, execlog.StreamsFor(logging))
	cmd.Stdout = capture.Stdout()
	cmd.Stderr = capture.Stderr()

	err := cmd.Run()
	capture.Flush()
	if err != nil {
		return capture.Failure(err, command)
	}
	s.Stdout, s.Stderr = capture.Outputs()

	if s.AssetPaths != nil {
		assets, err := globAssets(cmd.Dir, *s.AssetPaths)
		if err != nil {
			return fmt.Errorf("assetPaths: %w", err)
		}
		s.Assets = &assets
	}
	if s.ArchivePaths != nil {
		files, err := globAssets(cmd.Dir, *s.ArchivePaths)
		if err != nil {
			return fmt.Errorf("archivePaths: %w", err)
		}
		members := make(map[string]any, len(files))
		for k, v := range files {
			members[k] = v
		}
		archive, err := resource.NewAssetArchive(members)
		if err != nil {
			return fmt.Errorf("archivePaths: %w", err)
		}
		s.Archive = archive
	}
	return nil
}
