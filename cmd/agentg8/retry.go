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

// sendAgain runs call, asking again while its answer is lost (askAgain),
// for requests the gateway answers alike when repeated (an approver's
// decision, a settling: the same again answers 200 and the first stands).
func sendAgain(ctx context.Context, logger *slog.Logger, what string, call func() error) error {
	var err error
	askAgain(ctx, retryLimit, logger, what, func() string {
		err = call()
		var p *httpapi.Problem
		if err != nil && !errors.As(err, &p) && lost(err) {
			return err.Error()
		}
		return ""
	})
	return err
}
