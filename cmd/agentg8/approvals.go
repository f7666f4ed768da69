package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentg8/agentg8/httpapi"
)

func (m *Main) cmdApprovals(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr("usage: agentg8 approvals list | approve ID [--hash H] [--comment C] [--yes] | reject ID ...")
	}
	sub := args[0]
	fs := m.flags("approvals " + sub)
	u, k := m.clientFlags(fs)
	switch sub {
	case "list":
		if _, err := parse(fs, args[1:]); err != nil {
			return err
		}
		c, err := m.client(*u, *k)
		if err != nil {
			return err
		}
		list, err := c.Approvals(ctx)
		if err != nil {
			return clientErr(err)
		}
		if len(list) == 0 {
			fmt.Fprintln(m.Stdout, "no pending approvals")
		}
		for _, v := range list {
			mark := " "
			if v.CanDecide {
				mark = "*"
			}
			fmt.Fprintf(m.Stdout, "%s %s  %-22s %-14s expires %s  %s\n", mark, v.ID, v.Action.Task, v.Action.Principal,
				v.ExpiresAt.Format(time.RFC3339), v.Action.Input)
		}
		return nil
	case "approve", "reject":
		hash := fs.String("hash", "", "the request_hash you reviewed (refuses if the request changed)")
		comment := fs.String("comment", "", "comment recorded with the decision")
		yes := fs.Bool("yes", false, "do not ask for confirmation")
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usageErr("usage: agentg8 approvals %s ID [--hash H] [--comment C] [--yes]", sub)
		}
		c, err := m.client(*u, *k)
		if err != nil {
			return err
		}
		v, err := c.Approval(ctx, pos[0])
		if err != nil {
			return clientErr(err)
		}
		m.printApproval(v)
		if *hash != "" && *hash != v.RequestHash {
			return fmt.Errorf("the request changed since you reviewed it (hash %s, now %s); review it again", *hash, v.RequestHash)
		}
		if !*yes {
			fmt.Fprintf(m.Stdout, "%s this exact request? [y/N] ", strings.ToUpper(sub[:1])+sub[1:])
			line, err := bufio.NewReader(m.Stdin).ReadString('\n')
			if err != nil && err != io.EOF {
				return err
			}
			if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
				return fmt.Errorf("not confirmed; nothing was decided")
			}
		}
		var got *httpapi.ApprovalView
		err = sendAgain(ctx, retryLimit, m.logger("warn"), sub+" "+pos[0], func() (err error) {
			got, err = c.Decide(ctx, pos[0], sub == "approve", v.RequestHash, *comment)
			return err
		}, nil)
		if err != nil {
			return clientErr(err)
		}
		fmt.Fprintf(m.Stdout, "%sd: approval %s is %s; action %s is %s\n", sub, got.ID, got.Status, got.Action.ID, got.Action.Status)
		return nil
	}
	return usageErr("unknown approvals command %q", sub)
}

func (m *Main) printApproval(v *httpapi.ApprovalView) {
	a := v.Action
	w := m.Stdout
	fmt.Fprintf(w, "Approval %s (%s) for action %s\n", v.ID, v.Status, a.ID)
	fmt.Fprintf(w, "  task         %s\n  proposed by  %s (agent)\n", a.Task, a.Principal)
	if a.OnBehalfOf != "" {
		fmt.Fprintf(w, "  acting for   %s\n", a.OnBehalfOf)
	}
	if a.Reason != "" {
		fmt.Fprintf(w, "  reason       %q (written by the agent)\n", a.Reason)
	}
	fmt.Fprintf(w, "  input        %s\n", a.Input)
	if a.Preview != nil && a.Preview.Request != nil {
		r := a.Preview.Request
		fmt.Fprintf(w, "  will send    %s %s\n", r.Method, r.URL)
		for k, hv := range r.Headers {
			fmt.Fprintf(w, "               %s: %s\n", k, hv)
		}
		if len(r.Body) > 0 {
			fmt.Fprintf(w, "               %s\n", r.Body)
		}
		for _, s := range a.Preview.SideEffects {
			fmt.Fprintf(w, "  side effect  %s\n", s)
		}
	}
	for _, r := range v.Required {
		fmt.Fprintf(w, "  requires     %d of %s (rule %s)\n", r.Quorum, r.Group, r.Rule)
	}
	for _, d := range v.Decisions {
		fmt.Fprintf(w, "  decided      %s by %s at %s %s\n", d.Decision, d.User, d.At.Format(time.RFC3339), d.Comment)
	}
	if a.Preview != nil && (len(a.Preview.Summary) > 0 || a.Preview.Error != "") {
		for _, s := range a.Preview.Summary {
			fmt.Fprintf(w, "  changes      %s\n", s)
		}
		if a.Preview.Error != "" {
			fmt.Fprintf(w, "  preview      incomplete: %s\n", a.Preview.Error)
		}
	}
	fmt.Fprintf(w, "  expires      %s\n  request_hash %s\n", v.ExpiresAt.Format(time.RFC3339), v.RequestHash)
}
