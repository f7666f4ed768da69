package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Reader is what verification and export need from persistence.
type Reader interface {
	// ReadAuditRecords returns up to limit records in stored order, starting
	// after the record at position after (-1 for the start).
	ReadAuditRecords(ctx context.Context, after int64, limit int) ([]Record, error)
	ReadAuditHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)
	AuditCheckpoints(ctx context.Context) ([][]byte, error)
}

// Problem is the first thing verification found wrong.
type Problem struct {
	// Seq is the position of the first bad record, or -1 when the problem is
	// not one record (a bad checkpoint, truncation).
	Seq int64
	Msg string
}

func (p *Problem) Error() string {
	if p.Seq >= 0 {
		return fmt.Sprintf("record %d: %s", p.Seq, p.Msg)
	}
	return p.Msg
}

// Report summarises a successful verification.
type Report struct {
	Records     int64
	Checkpoints int
	Tree        tlog.Tree
}

// SealWait is how long Verify waits for a checkpoint to cover records that
// are not covered yet. A store shared by replicas seals records moments
// after they are appended; a record still uncovered after this long was
// inserted, or no gateway is running to seal it.
const SealWait = 5 * time.Second

// Verify recomputes the whole tree from the records and checks it against
// every stored signed checkpoint and, if given, a checkpoint saved elsewhere
// (which is what detects truncation of the tail). It returns a *Problem
// naming the first bad record when anything was modified, removed,
// reordered or inserted. Every record present when it starts must end up
// covered by a signed checkpoint (it waits up to SealWait for that); records
// appended while it runs are not its concern.
func Verify(ctx context.Context, r Reader, vkey string, saved []byte) (*Report, error) {
	var hashes []tlog.Hash // all stored hashes, recomputed
	mem := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x >= int64(len(hashes)) {
				return nil, fmt.Errorf("hash %d not computed", x)
			}
			out[i] = hashes[x]
		}
		return out, nil
	})
	var n int64
	var firstStoredMismatch int64 = -1
	after := int64(-1)
	// readTo reads records until there are at least want (all, if want < 0).
	readTo := func(want int64) error {
		for want < 0 || n < want {
			limit := int64(1000)
			if want >= 0 {
				limit = min(limit, want-n)
			}
			recs, err := r.ReadAuditRecords(ctx, after, int(limit))
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				return nil
			}
			idx := make([]int64, len(recs))
			for i := range recs {
				idx[i] = tlog.StoredHashIndex(0, n+int64(i))
			}
			stored, err := r.ReadAuditHashes(ctx, idx)
			if err != nil {
				stored = nil // missing stored hashes (not sealed yet): rely on checkpoints
			}
			for i, rec := range recs {
				var hdr struct {
					Seq *int64 `json:"seq"`
				}
				if err := json.Unmarshal(rec.Data, &hdr); err != nil || hdr.Seq == nil {
					return &Problem{Seq: n, Msg: "record is not a valid audit event (modified)"}
				}
				if *hdr.Seq != n {
					return &Problem{Seq: n, Msg: fmt.Sprintf("expected event %d here, found event %d (records removed, reordered or inserted)", n, *hdr.Seq)}
				}
				h := tlog.RecordHash(rec.Data)
				if stored != nil && firstStoredMismatch < 0 && !bytes.Equal(stored[i][:], h[:]) {
					firstStoredMismatch = n
				}
				hs, err := tlog.StoredHashesForRecordHash(n, h, mem)
				if err != nil {
					return err
				}
				hashes = append(hashes, hs...)
				n++
			}
			after = recs[len(recs)-1].Seq
		}
		return nil
	}
	// Checkpoints first: every one read now covers records already there,
	// so one that covers more than the records read is truncation.
	cps, err := r.AuditCheckpoints(ctx)
	if err != nil {
		return nil, err
	}
	if err := readTo(-1); err != nil {
		return nil, err
	}
	var lastGood int64
	check := func(cp []byte, what string) (tlog.Tree, error) {
		t, err := ParseCheckpoint(cp, vkey)
		if err != nil {
			return t, &Problem{Seq: -1, Msg: fmt.Sprintf("%s: %v", what, err)}
		}
		if t.N > n {
			return t, &Problem{Seq: n, Msg: fmt.Sprintf("log truncated: %s covers %d records but only %d remain", what, t.N, n)}
		}
		got, err := tlog.TreeHash(t.N, mem)
		if err != nil {
			return t, err
		}
		if got != t.Hash {
			seq := int64(-1)
			if firstStoredMismatch >= 0 && firstStoredMismatch < t.N {
				seq = firstStoredMismatch
			}
			msg := fmt.Sprintf("a record in %d..%d was modified: the records do not match the %s signed at size %d", lastGood, t.N-1, what, t.N)
			if seq >= 0 {
				msg = fmt.Sprintf("modified: the records do not match the %s signed at size %d", what, t.N)
			}
			return t, &Problem{Seq: seq, Msg: msg}
		}
		lastGood = max(lastGood, t.N)
		return t, nil
	}
	if firstStoredMismatch >= 0 {
		return nil, &Problem{Seq: firstStoredMismatch, Msg: "record differs from the hash stored when it was appended (modified)"}
	}
	rep := &Report{}
	for _, cp := range cps {
		t, err := check(cp, "checkpoint")
		if err != nil {
			return nil, err
		}
		rep.Checkpoints++
		if t.N >= rep.Tree.N {
			rep.Tree = t
		}
	}
	if saved != nil {
		if _, err := check(saved, "saved checkpoint"); err != nil {
			return nil, err
		}
	}
	// Records not covered yet: wait for a newer checkpoint, read the records
	// it covers, and check it too.
	target := n
	for deadline := time.Now().Add(SealWait); rep.Tree.N < target; {
		if time.Now().After(deadline) {
			return nil, &Problem{Seq: rep.Tree.N, Msg: "record is not covered by any signed checkpoint (inserted, or no gateway is running to seal it)"}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		latest, err := r.AuditCheckpoints(ctx)
		if err != nil {
			return nil, err
		}
		if len(latest) < len(cps) {
			return nil, &Problem{Seq: -1, Msg: "checkpoints were removed while verifying"}
		}
		for _, cp := range latest[len(cps):] {
			t, err := ParseCheckpoint(cp, vkey)
			if err != nil {
				return nil, &Problem{Seq: -1, Msg: fmt.Sprintf("checkpoint: %v", err)}
			}
			if err := readTo(t.N); err != nil {
				return nil, err
			}
			if firstStoredMismatch >= 0 {
				return nil, &Problem{Seq: firstStoredMismatch, Msg: "record differs from the hash stored when it was appended (modified)"}
			}
			if _, err := check(cp, "checkpoint"); err != nil {
				return nil, err
			}
			rep.Checkpoints++
			rep.Tree = t
		}
		cps = latest
	}
	rep.Records = rep.Tree.N
	return rep, nil
}
