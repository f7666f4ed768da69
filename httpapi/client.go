package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentg8/agentg8"
)

// Client calls the API; the CLI uses it.
type Client struct {
	BaseURL string
	Key     string
	HTTP    *http.Client
}

func (c *Client) do(ctx context.Context, method, path string, body any, hdr http.Header, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return 0, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.Key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 400 {
		var p Problem
		if json.Unmarshal(data, &p) != nil || p.Code == "" {
			return resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
		}
		return resp.StatusCode, &p
	}
	if out != nil {
		if s, ok := out.(*[]byte); ok {
			*s = data
			return resp.StatusCode, nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode response: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// Propose posts a proposal. On a problem the error is *Problem, which may
// carry the action.
func (c *Client) Propose(ctx context.Context, req ProposeRequest, idempotencyKey string) (*agentg8.Action, int, error) {
	h := http.Header{}
	if idempotencyKey != "" {
		h.Set("Idempotency-Key", idempotencyKey)
	}
	var a agentg8.Action
	st, err := c.do(ctx, http.MethodPost, "/v1/actions", req, h, &a)
	if err != nil {
		return nil, st, err
	}
	return &a, st, nil
}

// GetAction fetches an action, long-polling up to wait.
func (c *Client) GetAction(ctx context.Context, id string, wait time.Duration) (*agentg8.Action, error) {
	p := "/v1/actions/" + url.PathEscape(id)
	if wait > 0 {
		p += "?wait=" + url.QueryEscape(wait.String())
	}
	var a agentg8.Action
	_, err := c.do(ctx, http.MethodGet, p, nil, nil, &a)
	return &a, err
}

// ListActions lists actions.
func (c *Client) ListActions(ctx context.Context, q url.Values) ([]*agentg8.Action, error) {
	var out struct {
		Actions []*agentg8.Action `json:"actions"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/actions?"+q.Encode(), nil, nil, &out)
	return out.Actions, err
}

// Tools fetches tool definitions in a format.
func (c *Client) Tools(ctx context.Context, format string) (json.RawMessage, error) {
	var out struct {
		Tools json.RawMessage `json:"tools"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/tools?format="+url.QueryEscape(format), nil, nil, &out)
	return out.Tools, err
}

// Approvals lists pending approvals the caller may see.
func (c *Client) Approvals(ctx context.Context) ([]ApprovalView, error) {
	var out struct {
		Approvals []ApprovalView `json:"approvals"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/approvals?status=pending", nil, nil, &out)
	return out.Approvals, err
}

// Approval fetches one approval.
func (c *Client) Approval(ctx context.Context, id string) (*ApprovalView, error) {
	var v ApprovalView
	_, err := c.do(ctx, http.MethodGet, "/v1/approvals/"+url.PathEscape(id), nil, nil, &v)
	return &v, err
}

// Decide approves or rejects the request with the given hash.
func (c *Client) Decide(ctx context.Context, id string, approve bool, hash, comment string) (*ApprovalView, error) {
	verb := "reject"
	if approve {
		verb = "approve"
	}
	var v ApprovalView
	_, err := c.do(ctx, http.MethodPost, "/v1/approvals/"+url.PathEscape(id)+"/"+verb, DecideRequest{RequestHash: hash, Comment: comment}, nil, &v)
	return &v, err
}

// Resolve settles an outcome_unknown action (users in a resolver group).
func (c *Client) Resolve(ctx context.Context, id string, outcome agentg8.State, comment string) (*agentg8.Action, error) {
	var a agentg8.Action
	_, err := c.do(ctx, http.MethodPost, "/v1/actions/"+url.PathEscape(id)+"/resolve",
		map[string]any{"outcome": outcome, "comment": comment}, nil, &a)
	return &a, err
}
