package local

import (
	"context"

	"github.com/pulumi/pulumi-go-provider/infer"
)

// Run is the function command:local:run: a command run while the program runs (preview included),
// for reading state outside Pulumi's model. It changes nothing Pulumi tracks.
type Run struct{}

func (r *Run) Annotate(a infer.Annotator) {
	a.Describe(&r, "A local command run while the program runs, preview included; its output is returned. "+
		"A non-zero exit code fails the program.")
}

// RunArgs are the function's inputs: the command and how to run it.
type RunArgs struct {
	Command string `pulumi:"command"`
	RunOptions
}

func (a *RunArgs) Annotate(an infer.Annotator) {
	an.Describe(&a.Command, "The command to run.")
	an.Describe(&a.Logging, "Which output streams are logged. Defaults to stdoutAndStderr.")
	an.Describe(&a.Dir, "The working directory of the command.")
	an.Describe(&a.AssetPaths, "Accepted for compatibility; the stand-in returns no assets from a function.")
	an.Describe(&a.ArchivePaths, "Accepted for compatibility; the stand-in returns no archive from a function.")
	an.Describe(&a.AddPreviousOutputInEnv, "Accepted for compatibility; a function has no previous output.")
}

// RunState is the function's result: its inputs and what the command printed. (pulumi-command also returns
// `assets` and `archive` here; infer cannot serialise assets in a function's result, so the stand-in does not.)
type RunState struct {
	RunArgs
	Stdout string `pulumi:"stdout"`
	Stderr string `pulumi:"stderr"`
}

// Invoke runs the command with the resource's runner, so both behave the same.
func (*Run) Invoke(ctx context.Context, req infer.FunctionRequest[RunArgs]) (infer.FunctionResponse[RunState], error) {
	in := req.Input
	opts := in.RunOptions
	// A function returns no assets, so none are collected, and it has no
	// previous output to pass on.
	opts.AssetPaths, opts.ArchivePaths = nil, nil
	off := false
	opts.AddPreviousOutputInEnv = &off
	state := CommandState{CommandArgs: CommandArgs{RunOptions: opts}}
	err := state.Run(ctx, in.Command)
	out := RunState{RunArgs: in, Stdout: state.Stdout, Stderr: state.Stderr}
	return infer.FunctionResponse[RunState]{Output: out}, err
}
