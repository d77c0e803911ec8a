package execlog

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func newTestCapture(secret bool, s Streams) (*Capture, *[]string) {
	var lines []string
	c := NewCapture(WithSecretInputs(context.Background(), secret), s)
	c.log = func(l string) { lines = append(lines, l) }
	return c, &lines
}

func TestCaptureSplitsLinesAcrossWrites(t *testing.T) {
	c, lines := newTestCapture(false, Streams{Stdout: true, Stderr: true})
	out, errw := c.Stdout(), c.Stderr()
	out.Write([]byte("hel"))
	errw.Write([]byte("warn\r\n"))
	out.Write([]byte("lo\nwor"))
	out.Write([]byte("ld\n\n"))
	errw.Write([]byte("tail-no-newline"))
	c.Flush()

	want := []string{"warn", "hello", "world", "", "tail-no-newline"}
	if !reflect.DeepEqual(*lines, want) {
		t.Fatalf("logged %q, want %q", *lines, want)
	}
	stdout, stderr := c.Outputs()
	if stdout != "hello\nworld\n" || stderr != "warn\r\ntail-no-newline" {
		t.Fatalf("outputs %q / %q", stdout, stderr)
	}
}

func TestCaptureRespectsLoggingChoice(t *testing.T) {
	c, lines := newTestCapture(false, StreamsFor(ptr("stderr")))
	c.Stdout().Write([]byte("out\n"))
	c.Stderr().Write([]byte("err\n"))
	if !reflect.DeepEqual(*lines, []string{"err"}) {
		t.Fatalf("logged %q", *lines)
	}
	if s, _ := c.Outputs(); s != "out" {
		t.Fatalf("stdout must still be captured, got %q", s)
	}
}

func TestSecretInputsSilenceLogsAndErrors(t *testing.T) {
	c, lines := newTestCapture(true, Streams{Stdout: true, Stderr: true})
	c.Stdout().Write([]byte("hunter2\n"))
	c.Flush()
	if len(*lines) != 0 {
		t.Fatalf("secret run logged %q", *lines)
	}
	err := c.Failure(errors.New("exit status 1"), "echo hunter2")
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the secret: %v", err)
	}
}

func TestFailureCarriesCommandAndOutput(t *testing.T) {
	c, _ := newTestCapture(false, Streams{})
	c.Stdout().Write([]byte("o\n"))
	c.Stderr().Write([]byte("e\n"))
	err := c.Failure(errors.New("exit status 2"), "false")
	if got := err.Error(); got != "exit status 2: running \"false\":\no\ne\n" {
		t.Fatalf("got %q", got)
	}
}

func TestStreamsFor(t *testing.T) {
	cases := map[string]Streams{
		"stdout": {Stdout: true}, "stderr": {Stderr: true}, "none": {},
		"stdoutAndStderr": {true, true},
	}
	for in, want := range cases {
		if got := StreamsFor(ptr(in)); got != want {
			t.Errorf("%s: got %+v", in, got)
		}
	}
	if got := StreamsFor[string](nil); got != (Streams{true, true}) {
		t.Errorf("default: got %+v", got)
	}
}

func TestPreviousOutputEnv(t *testing.T) {
	if env := PreviousOutputEnv(nil, "a", ""); !reflect.DeepEqual(env, [][2]string{{EnvPreviousStdout, "a"}}) {
		t.Errorf("default on, empty skipped: got %q", env)
	}
	off := false
	if env := PreviousOutputEnv(&off, "a", "b"); env != nil {
		t.Errorf("disabled: got %q", env)
	}
}

func ptr[T any](v T) *T { return &v }
