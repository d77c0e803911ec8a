package lifecycle

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/pulumi/pulumi-go-provider/infer"
)

type args struct{ Commands }

type state struct {
	args
	Out string
}

// ran records the commands run; package level because Create starts from a
// zero state.
var ran []string

func (s *state) SetInputs(in args) { s.args = in }

func (s *state) Run(_ context.Context, command string) error {
	ran = append(ran, command)
	if command == "fail" {
		return errors.New("exit status 1")
	}
	s.Out = "ran " + command
	return nil
}

func ptr(s string) *string { return &s }

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	var c Controller[args, state, *state]
	ran = nil
	in := args{Commands{Create: ptr("c"), Delete: ptr("d")}}

	cr, err := c.Create(ctx, infer.CreateRequest[args]{Name: "r", Inputs: in, DryRun: true})
	if err != nil || cr.ID == "" || cr.Output.Out != "" {
		t.Fatalf("preview create: %+v, %v", cr, err)
	}
	cr, err = c.Create(ctx, infer.CreateRequest[args]{Name: "r", Inputs: in})
	if err != nil || cr.Output.Out != "ran c" || cr.Output.Delete == nil {
		t.Fatalf("create: %+v, %v", cr, err)
	}

	prev := cr.Output
	up, err := c.Update(ctx, infer.UpdateRequest[args, state]{Inputs: in, State: prev})
	if err != nil || up.Output.Out != "ran c" {
		t.Fatalf("update without `update` should rerun create: %+v, %v", up, err)
	}
	failing := args{Commands{Create: ptr("c"), Update: ptr("fail")}}
	if _, err := c.Update(ctx, infer.UpdateRequest[args, state]{Inputs: failing, State: prev, DryRun: true}); err != nil {
		t.Fatalf("preview update: %v", err)
	}
	up, err = c.Update(ctx, infer.UpdateRequest[args, state]{Inputs: failing, State: prev})
	if err == nil || up.Output.Out != "ran c" || up.Output.Update == nil {
		t.Fatalf("failed update must keep the results and take the inputs: %+v, %v", up, err)
	}

	// Delete runs what the state recorded, whatever the inputs say now.
	if _, err := c.Delete(ctx, infer.DeleteRequest[state]{State: prev}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, infer.DeleteRequest[state]{State: up.Output}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"c", "c", "fail", "d"}; !reflect.DeepEqual(ran, want) {
		t.Fatalf("ran %q, want %q", ran, want)
	}
}
