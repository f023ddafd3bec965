package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// etcdServer is a single-member etcd embedded in this process, listening on
// loopback (plain HTTP; it is reachable from this machine only).
type etcdServer struct {
	e         *embed.Etcd
	clientURL string
	ports     [2]int // client, peer
}

// startEtcd starts etcd with its data under dir/etcd and its log in
// dir/etcd.log. Ports are chosen free; should another process grab one
// between the probe and etcd's bind, it tries again with new ports.
// With saved ports (--resume) it starts on the data and ports it had before.
func startEtcd(ctx context.Context, dir string, fsync bool, saved savedPorts) (*etcdServer, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		srv, err := startEtcdOnce(ctx, dir, fsync, saved)
		if err == nil {
			return srv, nil
		}
		lastErr = err
		if saved.etcdClient != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("start etcd: %w", lastErr)
}

func startEtcdOnce(ctx context.Context, dir string, fsync bool, saved savedPorts) (*etcdServer, error) {
	resume := saved.etcdClient != 0
	ports := []int{saved.etcdClient, saved.etcdPeer}
	if !resume {
		var err error
		if ports, err = freePorts(2); err != nil {
			return nil, err
		}
	}
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}

	dataDir := filepath.Join(dir, "etcd")
	// A failed attempt may have left a half-initialised member behind.
	if !resume {
		if err := os.RemoveAll(dataDir); err != nil {
			return nil, err
		}
	}

	cfg := embed.NewConfig()
	cfg.Name = "testenv"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.InitialClusterToken = "testenv"
	cfg.EnableGRPCGateway = false
	cfg.UnsafeNoFsync = !fsync // a test cluster's data is disposable
	cfg.Logger = "zap"
	cfg.LogLevel = "info"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return &etcdServer{e: e, clientURL: clientURL.String(), ports: [2]int{ports[0], ports[1]}}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd failed while starting: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcd did not become ready: %w", context.Cause(ctx))
	}
}

// close stops etcd, waiting at most timeout.
func (s *etcdServer) close(timeout time.Duration) error {
	done := make(chan struct{})
	go func() {
		s.e.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return errors.New("etcd did not stop in time")
	}
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
