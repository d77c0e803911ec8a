package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Defaults documented by pulumi-command; also published in the schema and
// applied to inputs by infer's Check, so state records the effective values.
const (
	defaultPort           = 22
	defaultUser           = "root"
	defaultDialErrorLimit = 10
	defaultPerDialTimeout = 15
)

// Connection describes the target host.
type Connection struct {
	Endpoint
	Proxy *ProxyConnection `pulumi:"proxy,optional"`
}

func (c *Connection) Annotate(a infer.Annotator) {
	a.Describe(&c, "How to connect to a remote host over SSH.")
	a.Describe(&c.Host, "The address of the host to connect to.")
	a.Describe(&c.Proxy, "A bastion host to tunnel the connection through.")
}

// ProxyConnection describes a bastion host; same fields as Connection minus
// a further proxy.
type ProxyConnection struct {
	Endpoint
}

func (c *ProxyConnection) Annotate(a infer.Annotator) {
	a.Describe(&c, "How to connect to a bastion host over SSH.")
	a.Describe(&c.Host, "The address of the bastion host.")
}

// Endpoint is what the two connection types share: one SSH host and how to log
// in to it. Host is described by each type, since it names a different host.
// port is a "number" in the schema (a float), kept that way for wire
// compatibility with existing programs.
type Endpoint struct {
	Host               string   `pulumi:"host"`
	Port               *float64 `pulumi:"port,optional"`
	User               *string  `pulumi:"user,optional"`
	Password           *string  `pulumi:"password,optional" provider:"secret"`
	PrivateKey         *string  `pulumi:"privateKey,optional" provider:"secret"`
	PrivateKeyPassword *string  `pulumi:"privateKeyPassword,optional" provider:"secret"`
	AgentSocketPath    *string  `pulumi:"agentSocketPath,optional"`
	HostKey            *string  `pulumi:"hostKey,optional"`
	DialErrorLimit     *int     `pulumi:"dialErrorLimit,optional"`
	PerDialTimeout     *int     `pulumi:"perDialTimeout,optional"`
}

func (e *Endpoint) Annotate(a infer.Annotator) {
	a.Describe(&e.Port, "The SSH port. Defaults to 22.")
	a.SetDefault(&e.Port, defaultPort)
	a.Describe(&e.User, "The user to log in as. Defaults to root.")
	a.SetDefault(&e.User, defaultUser)
	a.Describe(&e.Password, "The password to log in with (also answers keyboard-interactive prompts).")
	a.Describe(&e.PrivateKey, "The contents of a private key to log in with; tried before the password.")
	a.Describe(&e.PrivateKeyPassword, "The passphrase of an encrypted private key.")
	a.Describe(&e.AgentSocketPath, "The SSH agent socket to take keys from. Defaults to $SSH_AUTH_SOCK when set.")
	a.Describe(&e.HostKey, "The expected host public key (authorized_keys format). If unset the host key is not checked.")
	a.Describe(&e.DialErrorLimit, "How many failed dial attempts are tolerated before giving up; -1 for no limit. Defaults to 10.")
	a.SetDefault(&e.DialErrorLimit, defaultDialErrorLimit)
	a.Describe(&e.PerDialTimeout, "Seconds allowed for each dial attempt, handshake included; 0 for no limit. Defaults to 15.")
	a.SetDefault(&e.PerDialTimeout, defaultPerDialTimeout)
}

// hop is an Endpoint with defaults resolved.
type hop struct {
	host, user                 string
	port                       int
	password, key, keyPassword *string
	agentSocket, hostKey       *string
	dialErrorLimit             int
	perDialTimeout             time.Duration
}

func (e *Endpoint) hop() hop {
	h := hop{
		host: e.Host, port: defaultPort, user: defaultUser,
		password: e.Password, key: e.PrivateKey, keyPassword: e.PrivateKeyPassword,
		agentSocket: e.AgentSocketPath, hostKey: e.HostKey,
		dialErrorLimit: defaultDialErrorLimit,
		perDialTimeout: defaultPerDialTimeout * time.Second,
	}
	if e.Port != nil {
		h.port = int(*e.Port)
	}
	if e.User != nil {
		h.user = *e.User
	}
	if e.DialErrorLimit != nil {
		h.dialErrorLimit = *e.DialErrorLimit
	}
	if e.PerDialTimeout != nil {
		h.perDialTimeout = time.Duration(*e.PerDialTimeout) * time.Second
	}
	return h
}

func (h hop) addr() string { return net.JoinHostPort(h.host, strconv.Itoa(h.port)) }

// closers collects what must outlive the handshake (agent sockets, the proxy
// client) and is released when the command is done.
type closers []func()

func (c closers) closeAll() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// clientConfig builds the SSH client settings. Auth methods are offered in
// pulumi-command's order: private key, password (and keyboard-interactive with
// the same password), then agent keys.
func (h hop) clientConfig(ctx context.Context, cl *closers) (*ssh.ClientConfig, error) {
	cfg := &ssh.ClientConfig{User: h.user, HostKeyCallback: ssh.InsecureIgnoreHostKey()}

	if h.hostKey != nil && *h.hostKey != "" {
		pk, err := parseHostKey(*h.hostKey)
		if err != nil {
			return nil, fmt.Errorf("hostKey: %w", err)
		}
		cfg.HostKeyCallback = ssh.FixedHostKey(pk)
		// Ask for the key type we can verify; otherwise a server holding several
		// host keys may present a different one and fail a correct config.
		cfg.HostKeyAlgorithms = hostKeyAlgorithms(pk)
	}

	if h.key != nil && *h.key != "" {
		var signer ssh.Signer
		var err error
		if h.keyPassword != nil && *h.keyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*h.key), []byte(*h.keyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*h.key))
		}
		if err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return nil, errors.New("privateKey is encrypted: set privateKeyPassword")
			}
			// The parse error never includes key material.
			return nil, fmt.Errorf("privateKey: %w", err)
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}

	if h.password != nil && *h.password != "" {
		pw := *h.password
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}

	// An explicitly configured agent socket must work; one merely inherited
	// from SSH_AUTH_SOCK is optional, so a stale variable cannot break a
	// connection that authenticates by key or password.
	sock, explicit := "", false
	if h.agentSocket != nil && *h.agentSocket != "" {
		sock, explicit = *h.agentSocket, true
	} else {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		conn, err := net.Dial("unix", sock)
		switch {
		case err == nil:
			*cl = append(*cl, func() { conn.Close() })
			cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		case explicit:
			return nil, fmt.Errorf("agentSocketPath: %w", err)
		default:
			p.GetLogger(ctx).Debugf("ignoring SSH_AUTH_SOCK: %v", err)
		}
	}
	return cfg, nil
}

// parseHostKey accepts an authorized_keys line ("ssh-ed25519 AAAA... comment")
// or a known_hosts line ("host ssh-ed25519 AAAA...").
func parseHostKey(s string) (ssh.PublicKey, error) {
	if pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s)); err == nil {
		return pk, nil
	}
	_, _, pk, _, _, err := ssh.ParseKnownHosts([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("not a public key in authorized_keys or known_hosts format: %w", err)
	}
	return pk, nil
}

func hostKeyAlgorithms(pk ssh.PublicKey) []string {
	if pk.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{pk.Type()}
}

// handshake runs the SSH handshake over conn within the per-dial timeout.
// ssh.ClientConfig.Timeout only bounds the TCP connect, so a host that accepts
// the connection but never speaks SSH would otherwise hang the step.
func handshake(conn net.Conn, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	if timeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(timeout))
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

func dialTCP(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(ctx, "tcp", addr)
}

// dial connects to the host, through the proxy when one is set. Each hop is
// retried up to its own dialErrorLimit. The returned func releases the client,
// the proxy client and any agent sockets.
func (c *Connection) dial(ctx context.Context) (*ssh.Client, func(), error) {
	var cl closers
	client, err := c.connect(ctx, &cl)
	if err != nil {
		cl.closeAll()
		return nil, nil, err
	}
	cl = append(cl, func() { client.Close() })
	return client, cl.closeAll, nil
}

// connect adds to cl what the client needs until it is closed.
func (c *Connection) connect(ctx context.Context, cl *closers) (*ssh.Client, error) {
	target := c.hop()
	cfg, err := target.clientConfig(ctx, cl)
	if err != nil {
		return nil, err
	}
	if c.Proxy == nil {
		return target.dialDirect(ctx, "dial", cfg)
	}

	bastion := c.Proxy.hop()
	proxyCfg, err := bastion.clientConfig(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	proxyClient, err := bastion.dialDirect(ctx, "dial proxy", proxyCfg)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	*cl = append(*cl, func() { proxyClient.Close() })

	// The tunnelled connect and the handshake are retried together: a failed
	// handshake leaves the channel unusable, so each attempt opens a new one.
	return withRetries(ctx, "dial "+target.addr()+" via proxy", target.dialErrorLimit, func() (*ssh.Client, error) {
		dctx, cancel := ctx, func() {}
		if target.perDialTimeout > 0 {
			dctx, cancel = context.WithTimeout(ctx, target.perDialTimeout)
		}
		defer cancel()
		conn, err := proxyClient.DialContext(dctx, "tcp", target.addr())
		if err != nil {
			return nil, err
		}
		return handshake(conn, target.addr(), cfg, target.perDialTimeout)
	})
}

// dialDirect connects to h over TCP, retrying up to h's dialErrorLimit; what
// names the attempt in progress messages and errors.
func (h hop) dialDirect(ctx context.Context, what string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	return withRetries(ctx, what+" "+h.addr(), h.dialErrorLimit, func() (*ssh.Client, error) {
		conn, err := dialTCP(ctx, h.addr(), h.perDialTimeout)
		if err != nil {
			return nil, err
		}
		return handshake(conn, h.addr(), cfg, h.perDialTimeout)
	})
}

// withRetries calls attempt until it succeeds or has failed more than limit
// times (limit < 0: never give up), backing off between attempts. Progress goes
// to the status line only, like pulumi-command's dial messages.
func withRetries[T any](ctx context.Context, what string, limit int, attempt func() (T, error)) (T, error) {
	var zero T
	delay := 500 * time.Millisecond
	for failures := 1; ; failures++ {
		v, err := attempt()
		if err == nil {
			return v, nil
		}
		if limit >= 0 && failures > limit {
			return zero, fmt.Errorf("%s: giving up after %d failed attempt(s): %w", what, failures, err)
		}
		max := "unlimited"
		if limit >= 0 {
			max = strconv.Itoa(limit)
		}
		p.GetLogger(ctx).InfoStatusf("%s: attempt %d failed (%v); retrying (error limit %s)", what, failures, err, max)
		select {
		case <-ctx.Done():
			return zero, fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 8*time.Second)
	}
}
