package audit

import (
	"bytes"
	"cmp"
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
	// AuditCheckpoints returns the signed checkpoints of sizes over after,
	// smallest first.
	AuditCheckpoints(ctx context.Context, after int64) ([][]byte, error)
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
	// From is where verification began: 0, or the trusted checkpoint's
	// size (VerifySince).
	From        int64
	Records     int64
	Checkpoints int
	Tree        tlog.Tree
	// Checkpoint is the signed checkpoint of Tree, the newest verified: the
	// one to save for the next VerifySince (a newer one may have been
	// written meanwhile, unverified).
	Checkpoint []byte
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
	return verify(ctx, r, vkey, saved, tlog.Tree{}, nil)
}

// VerifySince is Verify for the part of the log after a checkpoint saved
// earlier (trusted: its signature is checked, and what it covers was
// verified when it was saved). The tree hashes the store holds for that
// part must give the trusted root — so the log still extends it, and its
// history was not rewritten with hashes to match — and only the records
// after it are read and hashed, and only the checkpoints after it checked:
// the work and memory follow what was added, not the whole log. A record
// before the trusted checkpoint changed without its stored hashes is not
// seen here; Verify reads every record.
func VerifySince(ctx context.Context, r Reader, vkey string, trusted, saved []byte) (*Report, error) {
	t, err := ParseCheckpoint(trusted, vkey)
	if err != nil {
		return nil, &Problem{Seq: -1, Msg: fmt.Sprintf("trusted checkpoint: %v", err)}
	}
	return verify(ctx, r, vkey, saved, t, trusted)
}

// verify checks the log after from (a verified tree, signed in fromNote;
// zero for the whole log).
func verify(ctx context.Context, r Reader, vkey string, saved []byte, from tlog.Tree, fromNote []byte) (*Report, error) {
	// Tree hashes from base on are recomputed here; those before it (the
	// trusted part) are the store's, read as needed.
	base := tlog.StoredHashIndex(0, from.N)
	var hashes []tlog.Hash
	prior := map[int64]tlog.Hash{} // read from the store, before base
	mem := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		var need []int64
		for _, x := range idx {
			if _, ok := prior[x]; x < base && !ok {
				need = append(need, x)
			}
		}
		if len(need) > 0 {
			got, err := r.ReadAuditHashes(ctx, need)
			if err != nil || len(got) != len(need) {
				return nil, &Problem{Seq: -1, Msg: fmt.Sprintf("the tree hashes stored before the trusted checkpoint cannot be read (%v)", err)}
			}
			for i, x := range need {
				prior[x] = got[i]
			}
		}
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			switch {
			case x < base:
				out[i] = prior[x]
			case x-base < int64(len(hashes)):
				out[i] = hashes[x-base]
			default:
				return nil, fmt.Errorf("hash %d not computed", x)
			}
		}
		return out, nil
	})
	if from.N > 0 {
		got, err := tlog.TreeHash(from.N, mem)
		if err != nil {
			return nil, err
		}
		if got != from.Hash {
			return nil, &Problem{Seq: -1, Msg: fmt.Sprintf("the log does not extend the trusted checkpoint (size %d): the tree stored for its records has another root — history was rewritten, or the log truncated", from.N)}
		}
		// The stored hashes can outlive their records: the last record the
		// checkpoint covers must still be there, and be the one it covers.
		last := from.N - 1
		recs, err := r.ReadAuditRecords(ctx, last-1, 1)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 || recs[0].Seq != last {
			return nil, &Problem{Seq: last, Msg: fmt.Sprintf("log truncated: the trusted checkpoint covers %d records and record %d is gone", from.N, last)}
		}
		proof, err := tlog.ProveRecord(from.N, last, mem)
		if err != nil {
			return nil, err
		}
		if tlog.CheckRecord(proof, from.N, from.Hash, last, tlog.RecordHash(recs[0].Data)) != nil {
			return nil, &Problem{Seq: last, Msg: "record differs from the one the trusted checkpoint covers (modified)"}
		}
	}
	n := from.N
	var firstStoredMismatch int64 = -1
	after := n - 1
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
	// Those the trusted checkpoint covers are not read (all, from -1).
	cpsAfter := cmp.Or(from.N, -1)
	cps, err := r.AuditCheckpoints(ctx, cpsAfter)
	if err != nil {
		return nil, err
	}
	if err := readTo(-1); err != nil {
		return nil, err
	}
	lastGood := from.N
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
	rep := &Report{From: from.N, Tree: from, Checkpoint: fromNote}
	for _, cp := range cps {
		t, err := check(cp, "checkpoint")
		if err != nil {
			return nil, err
		}
		rep.Checkpoints++
		if t.N >= rep.Tree.N {
			rep.Tree, rep.Checkpoint = t, cp
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
		latest, err := r.AuditCheckpoints(ctx, cpsAfter)
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
			rep.Tree, rep.Checkpoint = t, cp
		}
		cps = latest
	}
	rep.Records = rep.Tree.N
	return rep, nil
}
