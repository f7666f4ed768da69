// Package notify delivers approval notices to people: webhooks (generic JSON
// or Slack-compatible text) and email over SMTP. Delivery is attempted by the
// pipeline's worker from a queue in the store, so a broken channel never
// blocks or fails an action.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"net/smtp"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentg8/agentg8"
)

// Channel is one configured destination.
type Channel struct {
	Type     string   // webhook | smtp
	URL      string   // webhook
	Format   string   // json (default) | slack
	Addr     string   // smtp host:port
	From     string   // smtp sender
	ToGroups []string // smtp: only members of these groups
	// SecretRef names a webhook's signing secret (a secret reference); ""
	// sends it unsigned. Only the reference is part of the channel's key;
	// the secret is resolved at each send, so rotating it needs no restart.
	SecretRef string `json:",omitempty"`
}

// Notifier sends notices to its channels.
type Notifier struct {
	mac      []byte
	resolve  func(ref string) (string, error)
	channels atomic.Pointer[channelSet]
	// emails maps a group to its members' addresses.
	emails atomic.Pointer[map[string][]string]
	client *http.Client
}

// channelSet is the configured channels and their keys, in config order.
type channelSet struct {
	list []Channel
	keys []string
}

// New returns a notifier; emails maps each group to its members'
// addresses, mac keys the channels' keys (see Channels), and resolve reads
// the webhooks' signing secrets.
func New(channels []Channel, emails map[string][]string, mac []byte, resolve func(ref string) (string, error)) *Notifier {
	n := &Notifier{mac: mac, resolve: resolve, client: &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	n.SetChannels(channels)
	n.SetEmails(emails)
	return n
}

// SetEmails replaces the group → addresses map (a reload of users).
func (n *Notifier) SetEmails(emails map[string][]string) { n.emails.Store(&emails) }

// SetChannels replaces the channels (a reload). Notices already queued
// keep going only to channels still defined exactly as when they were
// queued.
func (n *Notifier) SetChannels(channels []Channel) {
	set := &channelSet{list: channels}
	for _, c := range channels {
		set.keys = append(set.keys, c.key(n.mac))
	}
	n.channels.Store(set)
}

// key identifies a channel by its whole definition, as an HMAC (a webhook
// URL may hold a token, and keys are stored with queued notices). Equal
// definitions (and the same mac, which replicas share) give equal keys.
func (c Channel) key(mac []byte) string {
	def, _ := json.Marshal(c)
	h := hmac.New(sha256.New, mac)
	h.Write([]byte("agentg8 notify channel\n"))
	h.Write(def)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Channels returns the configured channels' keys, in config order. A
// notice is queued for a key, not a position: if the channel is changed or
// removed before delivery (a restart, a reload, a replica on another
// config), the notice is never sent to whatever took its place.
func (n *Notifier) Channels() []string { return n.channels.Load().keys }

// Name describes a channel for logs and metrics: its type and position.
func (n *Notifier) Name(key string) string {
	set := n.channels.Load()
	if i := slices.Index(set.keys, key); i >= 0 {
		return fmt.Sprintf("%s#%d", set.list[i].Type, i)
	}
	return "unknown"
}

// Send delivers one notice to the channel key names; delivery identifies
// it, the same on every attempt, so a receiver can drop repeats. A channel
// not configured here is an error, so the notice is retried on the usual
// schedule (another replica, or this one after a reload, may have it).
func (n *Notifier) Send(ctx context.Context, key, delivery string, notice *agentg8.ApprovalNotice) error {
	set := n.channels.Load()
	i := slices.Index(set.keys, key)
	if i < 0 {
		return errors.New("its notification channel is not configured here (changed or removed since it was queued)")
	}
	ch := set.list[i]
	switch ch.Type {
	case "webhook":
		return n.webhook(ctx, ch, delivery, notice)
	case "smtp":
		return n.email(ctx, ch, delivery, notice)
	}
	return fmt.Errorf("unknown channel type %q", ch.Type)
}

// Text renders a notice for people.
func Text(nt *agentg8.ApprovalNotice) string {
	var b strings.Builder
	switch nt.Event {
	case "approval_requested":
		fmt.Fprintf(&b, "Approval needed: %s proposed %s", nt.Principal, nt.Task)
	default:
		fmt.Fprintf(&b, "Approval %s: %s by %s is now %s", nt.ApprovalID, nt.Task, nt.Principal, nt.Status)
	}
	if nt.OnBehalfOf != "" {
		fmt.Fprintf(&b, " for %s", nt.OnBehalfOf)
	}
	b.WriteString("\n")
	if nt.Reason != "" {
		fmt.Fprintf(&b, "Reason given by the agent: %q\n", nt.Reason)
	}
	fmt.Fprintf(&b, "Input: %s\n", nt.Input)
	if nt.Target != "" {
		fmt.Fprintf(&b, "Will call: %s\n", nt.Target)
	}
	for _, s := range nt.SideEffects {
		fmt.Fprintf(&b, "Side effect: %s\n", s)
	}
	for _, r := range nt.Required {
		fmt.Fprintf(&b, "Needs %d approver(s) from %s (rule %s)\n", r.Quorum, r.Group, r.Rule)
	}
	fmt.Fprintf(&b, "Request hash: %s\nExpires: %s\n", nt.RequestHash, nt.ExpiresAt.Format(time.RFC3339))
	if nt.Link != "" {
		fmt.Fprintf(&b, "Review: %s\n", nt.Link)
	}
	return b.String()
}

// Webhook request headers.
const (
	// HeaderDelivery identifies a notice's delivery, the same on retries.
	HeaderDelivery = "AgentG8-Delivery"
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256 of
	// "<t>.<body>" keyed by the channel's secret>", on signed channels.
	HeaderSignature = "AgentG8-Signature"
)

// sign is the HeaderSignature value for body sent at t.
func sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(signature(secret, ts, body))
}

// signature is the HMAC-SHA256 of "<ts>.<body>" keyed by secret.
func signature(secret, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts + "."))
	h.Write(body)
	return h.Sum(nil)
}

// VerifySignature checks a webhook's HeaderSignature against its body and
// the channel's secret, for receivers written in Go: the signature must
// match and be no older (or newer) than tolerance at now, which bounds
// how long a captured request can be replayed. Receivers should also drop
// a HeaderDelivery they have seen.
func VerifySignature(header string, body []byte, secret string, tolerance time.Duration, now time.Time) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return errors.New("signature header is not t=…,v1=…")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("signature is %v from now, beyond %v", d.Round(time.Second), tolerance)
	}
	want := signature(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return errors.New("signature does not match")
}

func (n *Notifier) webhook(ctx context.Context, ch Channel, delivery string, nt *agentg8.ApprovalNotice) error {
	var body any = nt
	if ch.Format == "slack" {
		body = map[string]string{"text": Text(nt)}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	// A webhook URL often carries a token (Slack's do): errors, which are
	// logged and stored with the queued notice, name only its origin.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ch.URL, bytes.NewReader(b))
	if err != nil {
		return errors.New("webhook: the URL is not valid")
	}
	origin := req.URL.Scheme + "://" + req.URL.Host
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "agentg8-notify")
	req.Header.Set(HeaderDelivery, delivery)
	if ch.SecretRef != "" {
		secret, err := n.resolve(ch.SecretRef)
		if err != nil {
			return fmt.Errorf("webhook %s: its signing secret cannot be read: %w", origin, err)
		}
		req.Header.Set(HeaderSignature, sign(secret, time.Now(), b))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook %s: %w", origin, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook %s answered %s", origin, resp.Status)
	}
	return nil
}

// recipients are the members of the required groups, narrowed to ToGroups.
func (n *Notifier) recipients(ch Channel, nt *agentg8.ApprovalNotice) []string {
	var out []string
	for _, r := range nt.Required {
		if len(ch.ToGroups) > 0 && !slices.Contains(ch.ToGroups, r.Group) {
			continue
		}
		for _, e := range (*n.emails.Load())[r.Group] {
			if !slices.Contains(out, e) {
				out = append(out, e)
			}
		}
	}
	slices.Sort(out)
	return out
}

// messageID is a notice's Message-ID: the delivery ID at the sender's
// domain, the same on every attempt, so mail clients show a notice sent
// twice (its first SMTP answer lost) once.
func messageID(delivery, from string) string {
	domain := "agentg8.invalid"
	if a, err := mail.ParseAddress(from); err == nil {
		if _, d, ok := strings.Cut(a.Address, "@"); ok && d != "" {
			domain = d
		}
	}
	return "<" + delivery + "@" + domain + ">"
}

func (n *Notifier) email(ctx context.Context, ch Channel, delivery string, nt *agentg8.ApprovalNotice) error {
	to := n.recipients(ch, nt)
	if len(to) == 0 {
		return nil // nobody to tell on this channel
	}
	subject := fmt.Sprintf("[AgentG8] %s: %s", strings.ReplaceAll(nt.Event, "_", " "), nt.Task)
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
		ch.From, strings.Join(to, ", "), mime.QEncoding.Encode("utf-8", subject), time.Now().UTC().Format(time.RFC1123Z), messageID(delivery, ch.From))
	msg.WriteString(strings.ReplaceAll(Text(nt), "\n", "\r\n"))
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", ch.Addr)
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	host, _, _ := net.SplitHostPort(ch.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp: %w", err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return fmt.Errorf("smtp starttls: %w", err)
		}
	}
	if err := c.Mail(ch.From); err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return fmt.Errorf("smtp rcpt: %w", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	if _, err := w.Write(msg.Bytes()); err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	return c.Quit()
}

// CheckAddress validates an email address from the config.
func CheckAddress(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s {
		return errors.New("not a plain email address")
	}
	return nil
}
