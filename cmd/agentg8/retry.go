package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/agentg8/agentg8/httpapi"
)

// askAgain runs try until it gives no reason to try again, ctx ends, or
// the next wait would end past limit from the start: the clients' retry of
// a request sent under an idempotency key whose answer was lost (or whose
// first attempt is still running), which the gateway runs at most once.
// Waits grow from 0.2 s to 2 s; each retry is logged with its reason.
func askAgain(ctx context.Context, limit time.Duration, logger *slog.Logger, what string, try func() (again string)) {
	deadline := time.Now().Add(limit)
	wait := 200 * time.Millisecond
	for {
		reason := try()
		if reason == "" || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return
		}
		logger.Warn("asking the gateway again under the request's idempotency key", "request", what, "reason", reason, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// lost reports whether err may have lost the gateway's answer: not when
// the connection was refused or the name did not resolve (the request
// never left; asking again would only hold the caller up while the gateway
// is away).
func lost(err error) bool {
	var dns *net.DNSError
	return err != nil && !errors.Is(err, syscall.ECONNREFUSED) && !errors.As(err, &dns)
}

// retryLimit is how long the CLI's decisions and settlings ask again.
const retryLimit = 30 * time.Second

// sendAgain runs call, asking again for up to limit while its answer is
// lost (askAgain), or while busy (if set) says the gateway's problem
// answer is worth waiting out. Repeats must be harmless: a proposal under
// one idempotency key, an approver's decision, a settling (the same again
// answers 200 and the first stands).
func sendAgain(ctx context.Context, limit time.Duration, logger *slog.Logger, what string, call func() error, busy func(*httpapi.Problem) bool) error {
	var err error
	askAgain(ctx, limit, logger, what, func() string {
		err = call()
		var p *httpapi.Problem
		switch {
		case err == nil:
		case !errors.As(err, &p):
			// No answer from the gateway: the connection was cut, or a
			// proxy answered for it.
			if lost(err) {
				return err.Error()
			}
		case busy != nil && busy(p):
			return p.Code
		}
		return ""
	})
	return err
}
