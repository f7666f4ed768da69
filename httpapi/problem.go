package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/agentg8/agentg8"
)

// statusOf is the one code→status map.
var statusOf = map[string]int{
	agentg8.CodeInvalidInput:          http.StatusBadRequest,
	agentg8.CodeUnknownTask:           http.StatusNotFound,
	agentg8.CodePolicyDenied:          http.StatusForbidden,
	agentg8.CodeUnauthenticated:       http.StatusUnauthorized,
	agentg8.CodeForbidden:             http.StatusForbidden,
	agentg8.CodeNotFound:              http.StatusNotFound,
	agentg8.CodeIdempotencyInProgress: http.StatusConflict,
	agentg8.CodeIdempotencyKeyReused:  http.StatusUnprocessableEntity,
	agentg8.CodeUpstreamError:         http.StatusBadGateway,
	agentg8.CodeUpstreamTimeout:       http.StatusGatewayTimeout,
	agentg8.CodeAuditUnavailable:      http.StatusServiceUnavailable,
	agentg8.CodeCredentialUnavailable: http.StatusBadGateway,
	agentg8.CodeEgressDenied:          http.StatusBadGateway,
	agentg8.CodeConflict:              http.StatusConflict,
	agentg8.CodeBodyTooLarge:          http.StatusRequestEntityTooLarge,
	agentg8.CodeInternal:              http.StatusInternalServerError,
	agentg8.CodeApprovalMismatch:      http.StatusConflict,
	agentg8.CodeSelfApproval:          http.StatusForbidden,
	agentg8.CodeTooManyPending:        http.StatusTooManyRequests,
	agentg8.CodeApprovalVoid:          http.StatusConflict,
	agentg8.CodeNotPending:            http.StatusConflict,
	agentg8.CodeRateLimited:           http.StatusTooManyRequests,
}

// Status returns the HTTP status for an error code.
func Status(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Problem is an RFC 9457 problem document with AgentG8's extensions.
type Problem struct {
	Type   string               `json:"type"`
	Title  string               `json:"title"`
	Status int                  `json:"status"`
	Detail string               `json:"detail"`
	Code   string               `json:"code"`
	Errors []agentg8.FieldError `json:"errors,omitempty"`
	Action *agentg8.Action      `json:"action,omitempty"`
}

func (p *Problem) Error() string { return p.Code + ": " + p.Detail }

// writeError renders any error; only *agentg8.Error text reaches the caller.
func writeError(w http.ResponseWriter, log *slog.Logger, err error, a *agentg8.Action) {
	e := agentg8.AsError(err)
	if e.Code == agentg8.CodeInternal {
		log.Error("internal error", "err", err)
	}
	st := Status(e.Code)
	p := Problem{Type: "https://agentg8.dev/problems/" + e.Code, Title: http.StatusText(st), Status: st,
		Detail: e.Message, Code: e.Code, Errors: e.Errors, Action: a}
	if e.Code == agentg8.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="agentg8"`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(st)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
