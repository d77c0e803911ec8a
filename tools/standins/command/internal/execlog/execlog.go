// Package execlog holds what the local and remote commands share: forwarding a
// command's output to the engine line by line, keeping secrets out of logs and
// errors, and shaping captured output the way pulumi-command does.
package execlog

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
)

// Environment variables through which update/delete commands see the previous
// create/update output (pulumi-command's addPreviousOutputInEnv contract).
const (
	EnvPreviousStdout = "PULUMI_COMMAND_STDOUT"
	EnvPreviousStderr = "PULUMI_COMMAND_STDERR"
)

type secretKey struct{}

// WithSecretInputs records whether the resource being operated on has secret
// inputs. infer hands resources plain Go values, so secretness has to be read
// from the raw request by a wrapper and carried here.
func WithSecretInputs(ctx context.Context, secret bool) context.Context {
	return context.WithValue(ctx, secretKey{}, secret)
}

// HasSecretInputs reports what WithSecretInputs recorded; false if nothing was.
func HasSecretInputs(ctx context.Context) bool {
	v, _ := ctx.Value(secretKey{}).(bool)
	return v
}

// Streams says which of the command's streams are forwarded to the engine.
type Streams struct{ Stdout, Stderr bool }

// LoggingValues are the choices of the logging enum. Each resource declares its
// own Logging type, because the enum's token names the module it is in.
func LoggingValues[L ~string]() []infer.EnumValue[L] {
	return []infer.EnumValue[L]{
		{Name: "stdout", Value: "stdout", Description: "Capture stdout in logs but not stderr"},
		{Name: "stderr", Value: "stderr", Description: "Capture stderr in logs but not stdout"},
		{Name: "stdoutAndStderr", Value: "stdoutAndStderr", Description: "Capture stdout and stderr in logs"},
		{Name: "none", Value: "none", Description: "Capture no logs"},
	}
}

// StreamsFor maps the schema's logging enum value; nil or unknown means both,
// which is the documented default.
func StreamsFor[L ~string](logging *L) Streams {
	if logging == nil {
		return Streams{true, true}
	}
	switch string(*logging) {
	case "stdout":
		return Streams{Stdout: true}
	case "stderr":
		return Streams{Stderr: true}
	case "none":
		return Streams{}
	default:
		return Streams{true, true}
	}
}

// Capture collects a command's stdout and stderr separately (for the outputs)
// and interleaved (for the error message), and forwards complete lines to the
// engine as they arrive so long-running commands show progress.
type Capture struct {
	streams Streams
	quiet   bool         // secret inputs: never send output to the engine
	log     func(string) // where complete lines go; the engine's log in production

	mu       sync.Mutex
	stdout   bytes.Buffer
	stderr   bytes.Buffer
	combined bytes.Buffer
	partial  [2][]byte // unterminated tail of each stream, logged once complete
}

// NewCapture prepares a Capture. When the resource has secret inputs nothing is
// forwarded, because the output may echo them and engine logs are plain text.
func NewCapture(ctx context.Context, streams Streams) *Capture {
	logger := p.GetLogger(ctx)
	c := &Capture{streams: streams, quiet: HasSecretInputs(ctx), log: logger.Info}
	if c.quiet && (streams.Stdout || streams.Stderr) {
		logger.Info("command output is not logged because the resource has secret inputs")
	}
	return c
}

// Stdout and Stderr return writers for the two streams. Both may be written
// concurrently (os/exec and x/crypto/ssh copy each stream in its own goroutine).
func (c *Capture) Stdout() *streamWriter { return &streamWriter{c: c, idx: 0} }
func (c *Capture) Stderr() *streamWriter { return &streamWriter{c: c, idx: 1} }

type streamWriter struct {
	c   *Capture
	idx int
}

func (w *streamWriter) Write(b []byte) (int, error) {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.idx == 0 {
		c.stdout.Write(b)
	} else {
		c.stderr.Write(b)
	}
	c.combined.Write(b)
	if c.logs(w.idx) {
		buf := append(c.partial[w.idx], b...)
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				break
			}
			c.emit(string(buf[:i]))
			buf = buf[i+1:]
		}
		// Copy so the retained tail does not alias the caller's buffer.
		c.partial[w.idx] = append([]byte(nil), buf...)
	}
	return len(b), nil
}

func (c *Capture) logs(idx int) bool {
	if c.quiet {
		return false
	}
	if idx == 0 {
		return c.streams.Stdout
	}
	return c.streams.Stderr
}

func (c *Capture) emit(line string) {
	c.log(strings.TrimSuffix(line, "\r"))
}

// Flush logs any final line that had no trailing newline.
func (c *Capture) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.partial {
		if len(c.partial[i]) > 0 {
			c.emit(string(c.partial[i]))
			c.partial[i] = nil
		}
	}
}

// Outputs returns stdout and stderr with one trailing newline removed, which is
// how pulumi-command stores them (so `echo x` yields "x").
func (c *Capture) Outputs() (stdout, stderr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSuffix(c.stdout.String(), "\n"), strings.TrimSuffix(c.stderr.String(), "\n")
}

// Failure wraps a failed run the way pulumi-command reports it: the exit error,
// the command text and everything it printed. With secret inputs both the
// command text and the output are withheld, since the error is shown and stored
// in clear by the engine.
func (c *Capture) Failure(err error, command string) error {
	if c.quiet {
		return fmt.Errorf("%w: running [secret] command (output withheld because the resource has secret inputs)", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Errorf("%w: running %q:\n%s", err, command, c.combined.String())
}

// PreviousOutputEnv returns the PULUMI_COMMAND_* variables for a run, in a
// stable order. Empty values are skipped, as pulumi-command does, so a command
// can test `[ -n "$PULUMI_COMMAND_STDOUT" ]`.
func PreviousOutputEnv(enabled *bool, stdout, stderr string) [][2]string {
	if enabled != nil && !*enabled {
		return nil
	}
	var env [][2]string
	if stdout != "" {
		env = append(env, [2]string{EnvPreviousStdout, stdout})
	}
	if stderr != "" {
		env = append(env, [2]string{EnvPreviousStderr, stderr})
	}
	return env
}
