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
	"swarmestate.local/standins/command/internal/lifecycle"
)

// Logging selects which streams are forwarded to the engine's log.
type Logging string

// Values makes Logging a schema enum (token command:local:Logging).
func (Logging) Values() []infer.EnumValue[Logging] { return execlog.LoggingValues[Logging]() }

// Command is the resource controller; it holds no state of its own. Create,
// Update and Delete come from the lifecycle shared with command:remote:Command;
// CommandState.Run is the local part.
type Command struct {
	lifecycle.Controller[CommandArgs, CommandState, *CommandState]
}

func (c *Command) Annotate(a infer.Annotator) {
	a.Describe(&c, "A command run on the machine where Pulumi runs. "+
		"A non-zero exit code fails the create, update or delete step.")
}

// CommandArgs are the inputs. Every field is optional, as in pulumi-command.
type CommandArgs struct {
	lifecycle.Commands
	RunOptions
}

func (c *CommandArgs) Annotate(a infer.Annotator) {
	a.Describe(&c.Logging, "Which output streams are logged; stdout and stderr are captured as outputs either way. "+
		"Defaults to stdoutAndStderr.")
	a.Describe(&c.Dir, "The working directory of the command; it must exist. Defaults to the provider's working directory.")
	a.Describe(&c.AssetPaths, "Path globs, relative to `dir`, of files returned as `assets` after the command ran.")
	a.Describe(&c.ArchivePaths, "Path globs, relative to `dir`, of files returned as one `archive` after the command ran.")
	a.Describe(&c.AddPreviousOutputInEnv, "Whether PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR are set "+
		"for update and delete. Defaults to true.")
}

// RunOptions say how a command is run; the resource and command:local:run take
// the same ones.
type RunOptions struct {
	Stdin                  *string            `pulumi:"stdin,optional"`
	Logging                *Logging           `pulumi:"logging,optional"`
	Interpreter            *[]string          `pulumi:"interpreter,optional"`
	Dir                    *string            `pulumi:"dir,optional"`
	Environment            *map[string]string `pulumi:"environment,optional"`
	AssetPaths             *[]string          `pulumi:"assetPaths,optional"`
	ArchivePaths           *[]string          `pulumi:"archivePaths,optional"`
	AddPreviousOutputInEnv *bool              `pulumi:"addPreviousOutputInEnv,optional"`
}

// Annotate describes the options that mean the same for the resource and the
// function; each describes the others itself.
func (o *RunOptions) Annotate(a infer.Annotator) {
	a.Describe(&o.Stdin, "A string passed to the command's standard input.")
	a.Describe(&o.Interpreter, "The program and arguments used to run the command. Defaults to [\"/bin/sh\", \"-c\"].")
	a.Describe(&o.Environment, "Extra environment variables for the command's process.")
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
// only carries secretness between same-named fields.
func (*Command) WireDependencies(f infer.FieldSelector, args *CommandArgs, state *CommandState) {
	inputs := lifecycle.Mirror(f, &args.Commands, &state.Commands, [][2]any{
		{&args.Stdin, &state.Stdin},
		{&args.Logging, &state.Logging},
		{&args.Interpreter, &state.Interpreter},
		{&args.Dir, &state.Dir},
		{&args.Environment, &state.Environment},
		{&args.AssetPaths, &state.AssetPaths},
		{&args.ArchivePaths, &state.ArchivePaths},
		{&args.AddPreviousOutputInEnv, &state.AddPreviousOutputInEnv},
	})
	for _, out := range []any{&state.Stdout, &state.Stderr, &state.Assets, &state.Archive} {
		f.OutputField(out).DependsOn(inputs...)
	}
}

// SetInputs lets the shared lifecycle replace the inputs without knowing the
// layout of the state.
func (s *CommandState) SetInputs(in CommandArgs) { s.CommandArgs = in }

// Run executes command and, on success, records its output (and any assets) in
// s. On failure s keeps its previous results, which is what the engine keeps too.
func (s *CommandState) Run(ctx context.Context, command string) error {
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

	capture := execlog.NewCapture(ctx, execlog.StreamsFor(s.Logging))
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
