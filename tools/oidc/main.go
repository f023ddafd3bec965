// Command oidc-provider is the OpenID Connect identity provider Lattice's tests log in
// through: zitadel's OpenID-certified provider package (github.com/zitadel/oidc/v3/pkg/op)
// with the module's own example storage and login pages, served over HTTPS on loopback.
//
// It exists because `lattice login --oidc-issuer` speaks the device authorization grant
// (RFC 8628) to a real provider: discovery, the device authorization endpoint, the token
// endpoint's authorization_pending / access_denied answers, ID tokens signed with keys
// published in a JWKS, and refresh tokens. Nothing here answers for the provider; this file
// wires the library's parts together and registers one device-flow client, which may also
// refresh (as a device client of Dex, Okta or Keycloak may) and whose ID tokens live as long
// as --id-token-lifetime says, so a test can see one expire.
//
//	oidc-provider --listen 127.0.0.1:PORT --cert CERT --key KEY --users USERS.json \
//	    --client-id ID --client-secret SECRET [--id-token-lifetime 1h]
//
// The issuer is https://LISTEN. USERS.json is the example storage's user file: an object of
// users by ID, each with ID, Username and Password (the ID token's subject is the
// username). A user approves a device code at https://LISTEN/device.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// peerStorage is the example storage, with its clients as refreshingClient.
type peerStorage struct {
	*storage.Storage
	idTokenLifetime time.Duration
}

func (s peerStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return refreshingClient{Client: c, idTokenLifetime: s.idTokenLifetime}, nil
}

// CreateAccessAndRefreshTokens records a device-flow token's client, which the example
// storage reads only from its own request types (so its refresh tokens named no client and
// every refresh was refused as invalid_grant).
func (s peerStorage) CreateAccessAndRefreshTokens(ctx context.Context, request op.TokenRequest, current string) (string, string, time.Time, error) {
	if device, ok := request.(*op.DeviceAuthorizationState); ok {
		request = &storage.AuthRequest{ApplicationID: device.ClientID, UserID: device.Subject, Scopes: device.Scopes}
	}
	return s.Storage.CreateAccessAndRefreshTokens(ctx, request, current)
}

// refreshingClient is a client that may also use the refresh_token grant, and whose ID
// tokens live idTokenLifetime.
type refreshingClient struct {
	op.Client
	idTokenLifetime time.Duration
}

func (c refreshingClient) GrantTypes() []oidc.GrantType {
	return append(c.Client.GrantTypes(), oidc.GrantTypeRefreshToken)
}

func (c refreshingClient) IDTokenLifetime() time.Duration {
	return c.idTokenLifetime
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9998", "address to serve HTTPS on; the issuer is https://ADDRESS")
	cert := flag.String("cert", "", "PEM certificate chain for the listener")
	key := flag.String("key", "", "PEM private key for the listener")
	users := flag.String("users", "", "JSON file of the users who may log in")
	clientID := flag.String("client-id", "lattice", "the device-flow client's ID")
	clientSecret := flag.String("client-secret", "", "the device-flow client's secret (HTTP Basic)")
	idTokenLifetime := flag.Duration("id-token-lifetime", time.Hour, "how long an ID token is valid")
	flag.Parse()
	if *cert == "" || *key == "" || *users == "" || *clientSecret == "" {
		fmt.Fprintln(os.Stderr, "oidc-provider: --cert, --key, --users and --client-secret are required")
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	userStore, err := storage.StoreFromFile(*users)
	if err != nil {
		logger.Error("cannot read the users", "error", err)
		os.Exit(2)
	}
	issuer := "https://" + *listen
	storage.RegisterClients(storage.DeviceClient(*clientID, *clientSecret))
	store := peerStorage{Storage: storage.NewStorage(userStore), idTokenLifetime: *idTokenLifetime}
	router := exampleop.SetupServer(issuer, store, logger, false)

	server := &http.Server{
		Addr:              *listen,
		Handler:           router,
		ReadHeaderTimeout: 10 * time.Second,
	}
	logger.Info("serving", "issuer", issuer)
	if err := server.ListenAndServeTLS(*cert, *key); err != http.ErrServerClosed {
		logger.Error("server stopped", "error", err)
		os.Exit(1)
	}
}
