package remote

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestParseHostKeyFormats(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
	for _, in := range []string{line, line + " comment", "[127.0.0.1]:2222 " + line} {
		got, err := parseHostKey(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if string(got.Marshal()) != string(pk.Marshal()) {
			t.Fatalf("%q: parsed a different key", in)
		}
	}
	if _, err := parseHostKey("not a key"); err == nil {
		t.Fatal("expected an error")
	}
	if algs := hostKeyAlgorithms(pk); len(algs) != 1 || algs[0] != ssh.KeyAlgoED25519 {
		t.Fatalf("algorithms %v", algs)
	}
}

// dialErrorLimit counts tolerated failures: limit N gives up on failure N+1.
func TestWithRetriesHonoursLimit(t *testing.T) {
	for _, limit := range []int{0, 1} {
		calls := 0
		_, err := withRetries(context.Background(), "dial x", limit, func() (int, error) {
			calls++
			return 0, errors.New("refused")
		})
		if err == nil || calls != limit+1 {
			t.Fatalf("limit %d: %d calls, err %v", limit, calls, err)
		}
	}
	calls := 0
	v, err := withRetries(context.Background(), "dial x", 3, func() (int, error) {
		calls++
		if calls < 2 {
			return 0, errors.New("not yet")
		}
		return 42, nil
	})
	if err != nil || v != 42 || calls != 2 {
		t.Fatalf("got %d, %v after %d calls", v, err, calls)
	}
}

func TestWithRetriesStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := withRetries(ctx, "dial x", -1, func() (int, error) { return 0, errors.New("refused") })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestHopDefaults(t *testing.T) {
	h := (&Connection{Endpoint: Endpoint{Host: "h"}}).hop()
	if h.port != 22 || h.user != "root" || h.dialErrorLimit != 10 || h.perDialTimeout.Seconds() != 15 || h.addr() != "h:22" {
		t.Fatalf("defaults %+v", h)
	}
}
