// Command oidcop runs the example OpenID Provider of github.com/zitadel/oidc
// on a loopback address, as the real OAuth2 authorization server the
// credential tests obtain tokens from. Test tooling only: it is a separate
// module so the gateway does not depend on it.
//
// Client credentials: client "sid1", secret "verysecret". Users sign in through
// client "web"/"web-client-secret" (redirect http://127.0.0.1:1/callback) as
// "test-user@127.0.0.1"/"verysecure" (an admin) for token exchange tests.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	issuer := fmt.Sprintf("http://%s/", ln.Addr().String())
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	storage.RegisterClients(storage.WebClient("api", "secret"), storage.WebClient("web", "web-client-secret", "http://127.0.0.1:1/callback"))
	store := storage.NewStorage(storage.NewUserStore(issuer))
	router := exampleop.SetupServer(issuer, store, logger, false)
	// The test harness reads this line to learn the address.
	fmt.Printf("listening %s\n", issuer)
	srv := &http.Server{Handler: router, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
