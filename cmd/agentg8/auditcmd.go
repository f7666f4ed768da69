package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/agentg8/agentg8/audit"
)

// auditTarget opens the store and key an audit command reads.
func (m *Main) auditTarget(ctx context.Context, loadConfig func() (*Config, error), storeOverride string) (storage, *audit.Key, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, err
	}
	if storeOverride != "" {
		cfg.Store = storeOverride
	}
	if _, err := os.Stat(cfg.signingKeyPath()); err != nil {
		return nil, nil, fmt.Errorf("audit key: %w", err)
	}
	key, err := audit.LoadOrCreateKey(cfg.signingKeyPath())
	if err != nil {
		return nil, nil, err
	}
	st, err := openStore(ctx, cfg)
	return st, key, err
}

func (m *Main) cmdAudit(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr("usage: agentg8 audit verify|tail|export [--config FILE] [--store URL]")
	}
	sub := args[0]
	fs := m.flags("audit " + sub)
	loadConfig := m.configFlag(fs)
	storeURL := fs.String("store", "", "read this store instead of the config's (e.g. sqlite:copy.db)")
	var checkpoint, save, since *string
	var n *int
	var out *string
	switch sub {
	case "verify":
		checkpoint = fs.String("checkpoint", "", "a checkpoint saved earlier; detects truncation")
		save = fs.String("save-checkpoint", "", "write the newest verified checkpoint to this file")
		since = fs.String("since", "", "a checkpoint saved by an earlier verify: trust what it covers, read and check only what came after")
	case "tail":
		n = fs.Int("n", 20, "number of events")
	case "export":
		out = fs.String("out", "", "write JSON Lines here instead of stdout")
	default:
		return usageErr("unknown audit command %q", sub)
	}
	if _, err := parse(fs, args[1:]); err != nil {
		return err
	}
	st, key, err := m.auditTarget(ctx, loadConfig, *storeURL)
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "verify":
		var saved []byte
		if *checkpoint != "" {
			if saved, err = os.ReadFile(*checkpoint); err != nil {
				return err
			}
		}
		var rep *audit.Report
		var trusted []byte
		if *since != "" {
			if trusted, err = os.ReadFile(*since); err != nil {
				return err
			}
			rep, err = audit.VerifySince(ctx, st, key.VerifierKey, trusted, saved)
		} else {
			rep, err = audit.Verify(ctx, st, key.VerifierKey, saved)
		}
		if err != nil {
			return fmt.Errorf("audit log FAILED verification: %w", err)
		}
		if *since != "" {
			fmt.Fprintf(m.Stdout, "ok: %d records (%d after the trusted checkpoint at %d), %d signed checkpoints, root %s\n", rep.Records, rep.Records-rep.From, rep.From, rep.Checkpoints, rep.Tree.Hash)
		} else {
			fmt.Fprintf(m.Stdout, "ok: %d records, %d signed checkpoints, root %s\n", rep.Records, rep.Checkpoints, rep.Tree.Hash)
		}
		if *save != "" && rep.Checkpoint != nil {
			return os.WriteFile(*save, rep.Checkpoint, 0o644)
		}
		return nil
	case "tail":
		size, err := st.AuditSize(ctx)
		if err != nil {
			return err
		}
		recs, err := st.ReadAuditRecords(ctx, max(size-int64(*n), 0)-1, *n)
		if err != nil {
			return err
		}
		for _, r := range recs {
			var ev struct {
				Seq      int64  `json:"seq"`
				Time     string `json:"time"`
				Type     string `json:"type"`
				ActionID string `json:"action_id"`
				Task     string `json:"task"`
				Princ    string `json:"principal"`
				Status   string `json:"status"`
			}
			_ = json.Unmarshal(r.Data, &ev)
			fmt.Fprintf(m.Stdout, "%6d %s %-18s %-32s %-14s %-22s %s\n", ev.Seq, ev.Time, ev.Type, ev.ActionID, ev.Princ, ev.Task, ev.Status)
		}
		return nil
	default: // export
		w := bufio.NewWriter(m.Stdout)
		if *out != "" {
			f, err := os.Create(*out)
			if err != nil {
				return err
			}
			defer f.Close()
			w = bufio.NewWriter(f)
		}
		after := int64(-1)
		for {
			recs, err := st.ReadAuditRecords(ctx, after, 1000)
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				w.Write(r.Data)
				w.WriteByte('\n')
			}
			after = recs[len(recs)-1].Seq
		}
		return w.Flush()
	}
}
