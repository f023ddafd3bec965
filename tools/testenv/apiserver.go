package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	cliflag "k8s.io/component-base/cli/flag"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/zpages/flagz"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

const (
	serviceClusterIPRange = "10.0.0.0/24"
	firstServiceIP        = "10.0.0.1" // the "kubernetes" service; also in the serving cert
)

// apiServer is kube-apiserver (the code of cmd/kube-apiserver) running in
// this process.
type apiServer struct {
	port     int
	cancel   context.CancelFunc
	finished chan struct{} // closed when Run has returned
	err      error         // Run's result; read it after finished is closed
}

// apiserverArgs returns testenv's kube-apiserver flags followed by extra (the
// flags given after "--"). A flag named in extra replaces testenv's value
// entirely, which matters for list-valued flags such as --authorization-mode
// that would otherwise accumulate.
func apiserverArgs(dir string, p *pki, etcdURL string, extra []string) []string {
	given := map[string]bool{}
	for _, a := range extra {
		if strings.HasPrefix(a, "--") {
			given[flagName(a)] = true
		}
	}
	var args []string
	for _, a := range defaultAPIServerArgs(dir, p, etcdURL) {
		if !given[flagName(a)] {
			args = append(args, a)
		}
	}
	return append(args, extra...)
}

// flagName returns the normalised name of a "--name[=value]" argument.
func flagName(arg string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
	return strings.ReplaceAll(name, "_", "-")
}

func defaultAPIServerArgs(dir string, p *pki, etcdURL string) []string {
	return []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--etcd-servers=" + etcdURL,
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"), // unused: certs are given
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servKey,
		"--client-ca-file=" + p.caCert,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=" + serviceClusterIPRange,
		"--allow-privileged=true",
		// The "kubernetes" service cannot have endpoints: 127.0.0.1 is not a
		// valid endpoint address, so the reconciler would log an error every
		// 10s. The service itself is still created.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
}

// startAPIServer configures kube-apiserver exactly as its own command does
// (cmd/kube-apiserver/app.NewAPIServerCommand), minus the process-wide signal
// handler it installs: stopping is driven by ctx instead. Logging goes to
// logOut. It runs until stop is called (or it fails).
func startAPIServer(args []string, logOut io.Writer, port int) (*apiServer, error) {
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := startAPIServerWithCancel(ctx, cancel, args, logOut, port)
	if err != nil {
		cancel()
	}
	return srv, err
}

func startAPIServerWithCancel(ctx context.Context, cancel context.CancelFunc, args []string, logOut io.Writer, port int) (*apiServer, error) {
	s := options.NewServerRunOptions()
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)

	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	fs.SetOutput(io.Discard)
	namedFlagSets := s.Flags()
	s.Flagz = flagz.NamedFlagSetsReader{FlagSets: namedFlagSets}
	options.AddCustomGlobalFlags(namedFlagSets.FlagSet("generic"))
	for _, f := range namedFlagSets.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("kube-apiserver flags: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("kube-apiserver flags: unexpected argument %q", fs.Arg(0))
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	// kube-apiserver's loopback clients should not log self-issued warnings.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	if err := logsapi.ValidateAndApplyWithOptions(s.Logs, &logsapi.LoggingOptions{ErrorStream: logOut, InfoStream: logOut}, featureGate); err != nil {
		return nil, err
	}
	cliflag.PrintFlags(fs) // "FLAG: --name=value" lines, logged at --v=1 and up

	// Listen before starting so that the port is ours: no race with other
	// processes picking free ports.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s.SecureServing.Listener = ln
	s.SecureServing.BindPort = ln.Addr().(*net.TCPAddr).Port

	completed, err := s.Complete(ctx)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		ln.Close()
		return nil, utilerrors.NewAggregate(errs)
	}
	featureGate.(featuregate.MutableFeatureGate).AddMetrics()

	srv := &apiServer{port: s.SecureServing.BindPort, cancel: cancel, finished: make(chan struct{})}
	go func() {
		defer close(srv.finished)
		srv.err = app.Run(ctx, completed)
		if srv.err == nil && ctx.Err() == nil {
			srv.err = errors.New("kube-apiserver stopped unexpectedly")
		}
	}()
	return srv, nil
}

// running reports whether Run has not returned yet.
func (a *apiServer) running() bool {
	select {
	case <-a.finished:
		return false
	default:
		return true
	}
}

// stop asks the API server to shut down and waits at most timeout.
func (a *apiServer) stop(timeout time.Duration) error {
	a.cancel()
	select {
	case <-a.finished:
		return a.err
	case <-time.After(timeout):
		return errors.New("kube-apiserver did not stop in time")
	}
}

// waitReady polls GET /readyz with the admin client certificate until it
// answers 200 "ok", the server fails, or ctx ends.
func (a *apiServer) waitReady(ctx context.Context, p *pki) error {
	client, err := adminHTTPClient(p)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", a.port)
	last := "no answer yet"
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		reqCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				cancel()
				return nil
			}
			last = fmt.Sprintf("/readyz answered %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else if ctx.Err() == nil {
			last = err.Error()
		}
		cancel()
		select {
		case <-a.finished:
			return fmt.Errorf("kube-apiserver failed: %w", a.err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %s)", context.Cause(ctx), last)
		case <-tick.C:
		}
	}
}

func adminHTTPClient(p *pki) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caPEM) {
		return nil, errors.New("cannot parse the generated CA")
	}
	cert, err := tls.X509KeyPair(p.adminPEM, p.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}
