// Command testenv runs a real Kubernetes control plane (etcd and
// kube-apiserver, both in this one process) for integration tests.
//
// See README.md and `testenv --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // as cmd/kube-apiserver: CronJob time zones

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // as cmd/kube-apiserver: --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as cmd/kube-apiserver
	_ "k8s.io/component-base/metrics/prometheus/version"  // as cmd/kube-apiserver
	"k8s.io/klog/v2"
)

const usage = `testenv runs a real Kubernetes control plane for integration tests:
etcd (embedded) and kube-apiserver (in-process), on loopback.

Usage:
  testenv [flags] [-- kube-apiserver flags...]

It generates a CA, a serving certificate, an admin client certificate
(group system:masters) and a service-account key pair under DIR, starts
etcd and kube-apiserver on free loopback ports, waits for /readyz, writes
DIR/kubeconfig (context "testenv") and prints exactly one line to stdout:

  ready /absolute/path/to/DIR/kubeconfig

It then runs until SIGTERM, SIGINT or SIGHUP, or until its stdin reaches
end-of-file (so a parent holding a pipe to its stdin takes it down when it
dies), and stops kube-apiserver, then etcd. Exit status: 0 after a clean
stop; 1 if startup fails, times out or is interrupted, or shutdown fails;
2 for bad usage. Errors and a few status lines go to stderr; kube-apiserver's
log goes to DIR/apiserver.log and etcd's to DIR/etcd.log.

Flags after "--" are passed to kube-apiserver; one that testenv also sets
replaces testenv's value (e.g. -- --v=4, -- --authorization-mode=RBAC,
-- --disable-admission-plugins=ServiceAccount).

Flags:
`

type config struct {
	dir             string
	wipe            bool
	resume          bool
	cleanup         bool
	watchStdin      bool
	etcdFsync       bool
	startupTimeout  time.Duration
	shutdownTimeout time.Duration
	apiserverArgs   []string
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("testenv", flag.ContinueOnError)
	fs.StringVar(&c.dir, "dir", "", "state directory: certificates, keys, kubeconfig, logs, etcd data (default: a new directory under $TMPDIR)")
	fs.BoolVar(&c.wipe, "wipe", false, "delete the contents of --dir first if it is not empty (otherwise a non-empty --dir is an error)")
	fs.BoolVar(&c.resume, "resume", false, "start again on the state a stopped testenv left in --dir: the same certificates, etcd data and ports (a restart, as far as a client can tell)")
	fs.BoolVar(&c.cleanup, "cleanup", false, "delete --dir after a clean stop")
	fs.BoolVar(&c.watchStdin, "watch-stdin", true, "stop when stdin reaches end-of-file; use --watch-stdin=false when stdin is /dev/null")
	fs.BoolVar(&c.etcdFsync, "etcd-fsync", false, "let etcd fsync its writes (slower; test data is disposable)")
	fs.DurationVar(&c.startupTimeout, "startup-timeout", 120*time.Second, "give up if the control plane is not ready within this time")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 15*time.Second, "exit with status 1 if stopping takes longer than this")
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c.apiserverArgs = fs.Args()
	if len(c.apiserverArgs) > 0 && (len(args) < len(c.apiserverArgs)+1 || args[len(args)-len(c.apiserverArgs)-1] != "--") {
		return nil, fmt.Errorf("unexpected argument %q (kube-apiserver flags go after \"--\")", c.apiserverArgs[0])
	}
	if c.resume && (c.wipe || c.dir == "") {
		return nil, errors.New("--resume needs --dir, and cannot be combined with --wipe")
	}
	if c.startupTimeout <= 0 || c.shutdownTimeout <= 0 {
		return nil, errors.New("timeouts must be positive")
	}
	return c, nil
}

// errStdinClosed is the stop cause when stdin reaches end-of-file.
var errStdinClosed = errors.New("stdin closed")

func main() {
	os.Exit(run())
}

func run() int {
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		return 2
	}
	stdout, stderr := os.Stdout, os.Stderr
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "testenv: "+format+"\n", args...)
		return 1
	}
	start := time.Now()

	dir, err := prepareDir(c.dir, c.wipe, c.resume)
	if err != nil {
		return fail("%v", err)
	}
	logPath := filepath.Join(dir, "apiserver.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fail("%v", err)
	}
	defer logFile.Close()
	// Stdout carries only the "ready" line, and the libraries in this process
	// must not clutter the terminal: whatever they write to os.Stdout or
	// os.Stderr goes to the log. (Go runtime crashes still reach fd 2.)
	os.Stdout, os.Stderr = logFile, logFile
	logs.InitLogs() // route the standard library's log package through klog
	defer klog.Flush()

	// stop is called with the reason to shut down.
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	// A parent that died leaves stdout/stderr as broken pipes: writing to them
	// must fail with EPIPE rather than kill the process mid-shutdown.
	signal.Ignore(syscall.SIGPIPE)
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		sig := <-signals
		stop(fmt.Errorf("received %v", sig))
		sig = <-signals
		fmt.Fprintf(stderr, "testenv: received %v again, exiting immediately\n", sig)
		klog.Flush()
		os.Exit(1)
	}()
	if c.watchStdin {
		go func() {
			if _, err := io.Copy(io.Discard, os.Stdin); err != nil {
				stop(fmt.Errorf("%w: %v", errStdinClosed, err))
			} else {
				stop(errStdinClosed)
			}
		}()
	}
	// A hung shutdown must not keep the process around.
	var shutdownDeadline *time.Timer
	beginShutdown := func() {
		shutdownDeadline = time.AfterFunc(c.shutdownTimeout, func() {
			fmt.Fprintf(stderr, "testenv: shutdown did not finish within %v, exiting\n", c.shutdownTimeout)
			klog.Flush()
			os.Exit(1)
		})
	}

	errStartupTimeout := fmt.Errorf("control plane not ready within %v", c.startupTimeout)
	startCtx, cancelStart := context.WithTimeoutCause(ctx, c.startupTimeout, errStartupTimeout)
	defer cancelStart()

	// startupFailed reports why the control plane did not come up.
	startupFailed := func(err error, log string) int {
		if ctx.Err() != nil { // stopped by a signal or stdin before ready
			cause := context.Cause(ctx)
			if errors.Is(cause, errStdinClosed) {
				return fail("stopped before ready: %v (pass --watch-stdin=false if stdin is /dev/null)", cause)
			}
			return fail("stopped before ready: %v", cause)
		}
		if log != "" {
			return fail("%v (see %s)", err, log)
		}
		return fail("%v", err)
	}

	var p *pki
	var ports savedPorts
	if c.resume {
		if p, err = loadPKI(dir); err != nil {
			return startupFailed(fmt.Errorf("resume: %w", err), "")
		}
		if ports, err = readPorts(dir); err != nil {
			return startupFailed(fmt.Errorf("resume: %w", err), "")
		}
	} else if p, err = generatePKI(dir); err != nil {
		return startupFailed(fmt.Errorf("generate certificates: %w", err), "")
	}

	etcd, err := startEtcd(startCtx, dir, c.etcdFsync, ports)
	if err != nil {
		return startupFailed(err, filepath.Join(dir, "etcd.log"))
	}

	args := apiserverArgs(dir, p, etcd.clientURL, c.apiserverArgs)
	api, err := startAPIServer(args, fatalTee{log: logFile, stderr: stderr}, ports.apiserver)
	if err == nil {
		err = api.waitReady(startCtx, p)
	}
	if err != nil {
		code := startupFailed(fmt.Errorf("kube-apiserver: %w", err), logPath)
		if api != nil && api.running() {
			// Stopping kube-apiserver before its post-start hooks have
			// finished makes it exit the process from a klog.Fatal (status
			// 255). Nothing is worth saving yet: exiting ends both servers.
			return code
		}
		beginShutdown()
		_ = etcd.close(c.shutdownTimeout)
		return code
	}

	kubeconfig := filepath.Join(dir, "kubeconfig")
	err = writePorts(dir, savedPorts{etcdClient: etcd.ports[0], etcdPeer: etcd.ports[1], apiserver: api.port})
	if err == nil {
		err = writeKubeconfig(kubeconfig, api.port, p)
	}
	if err != nil {
		beginShutdown()
		_ = api.stop(c.shutdownTimeout)
		_ = etcd.close(c.shutdownTimeout)
		return fail("write kubeconfig: %v", err)
	}
	fmt.Fprintf(stdout, "ready %s\n", kubeconfig)
	fmt.Fprintf(stderr, "testenv: ready in %.1fs: https://127.0.0.1:%d (etcd %s), state in %s\n",
		time.Since(start).Seconds(), api.port, etcd.clientURL, dir)

	var runErr error
	select {
	case <-ctx.Done():
	case <-api.finished:
		runErr = api.err
	}

	beginShutdown()
	stopStart := time.Now()
	code := 0
	if runErr != nil {
		fail("kube-apiserver: %v (see %s)", runErr, logPath)
		code = 1
	} else if err := api.stop(c.shutdownTimeout); err != nil {
		fail("stop kube-apiserver: %v", err)
		code = 1
	}
	if err := etcd.close(c.shutdownTimeout); err != nil {
		fail("stop etcd: %v", err)
		code = 1
	}
	shutdownDeadline.Stop()
	klog.Flush()
	if code == 0 && c.cleanup {
		logFile.Close()
		if err := os.RemoveAll(dir); err != nil {
			fail("cleanup: %v", err)
			code = 1
		}
	}
	if code == 0 {
		fmt.Fprintf(stderr, "testenv: stopped in %.1fs (%v)\n", time.Since(stopStart).Seconds(), context.Cause(ctx))
	}
	return code
}

// prepareDir creates dir (or a temporary directory if dir is empty) and returns
// its absolute path. A non-empty directory is refused unless wipe is set.
func prepareDir(dir string, wipe, resume bool) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "testenv-")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return "", err
	}
	if resume {
		if len(entries) == 0 {
			return "", fmt.Errorf("%s is empty: nothing to resume", abs)
		}
		return abs, nil
	}
	if len(entries) > 0 {
		if !wipe {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			return "", fmt.Errorf("%s is not empty (%s); pass --wipe to clear it, or use another directory", abs, strings.Join(names, ", "))
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(abs, e.Name())); err != nil {
				return "", err
			}
		}
	}
	return abs, nil
}

// writeKubeconfig writes a kubeconfig with a single context "testenv" whose
// credentials (CA, client certificate and key) are embedded.
func writeKubeconfig(path string, port int, p *pki) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["testenv"] = &clientcmdapi.Cluster{
		Server:                   fmt.Sprintf("https://127.0.0.1:%d", port),
		CertificateAuthorityData: p.caPEM,
	}
	kc.AuthInfos["testenv-admin"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: p.adminPEM,
		ClientKeyData:         p.adminKeyPEM,
	}
	kc.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: "testenv-admin", Namespace: "default"}
	kc.CurrentContext = "testenv"
	tmp := path + ".tmp"
	if err := clientcmd.WriteToFile(*kc, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// fatalTee writes kube-apiserver's log to log and also copies klog's fatal
// entries ("F" followed by the date) to stderr: klog exits the process right
// after them, so this is the only chance to say why. Each entry is written
// with a single Write call.
type fatalTee struct{ log, stderr io.Writer }

func (t fatalTee) Write(p []byte) (int, error) {
	if len(p) > 1 && p[0] == 'F' && p[1] >= '0' && p[1] <= '9' {
		t.stderr.Write(append([]byte("testenv: kube-apiserver: "), p...))
	}
	return t.log.Write(p)
}

// savedPorts are the ports a testenv listened on, kept in DIR/ports so that
// --resume listens on the same ones (zero: any free port).
type savedPorts struct {
	etcdClient, etcdPeer, apiserver int
}

func writePorts(dir string, p savedPorts) error {
	return writeFile(filepath.Join(dir, "ports"), []byte(fmt.Sprintf("%d %d %d\n", p.etcdClient, p.etcdPeer, p.apiserver)), 0o644)
}

func readPorts(dir string) (savedPorts, error) {
	var p savedPorts
	data, err := os.ReadFile(filepath.Join(dir, "ports"))
	if err != nil {
		return p, err
	}
	if _, err := fmt.Sscanf(string(data), "%d %d %d", &p.etcdClient, &p.etcdPeer, &p.apiserver); err != nil {
		return p, fmt.Errorf("%s: %w", filepath.Join(dir, "ports"), err)
	}
	return p, nil
}
