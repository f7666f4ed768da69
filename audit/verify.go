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
	// AuditCheckpoints returns up to limit signed checkpoints of sizes
	// over after, smallest first.
	AuditCheckpoints(ctx context.Context, after int64, limit int) ([][]byte, error)
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

// checkpointPage is how many checkpoints verification reads at a time.
const checkpointPage = 1000

// verify checks the log after from (a verified tree, signed in fromNote;
// zero for the whole log). It streams: records are read and hashed in
// order, and each checkpoint is checked when the records reach its size,
// keeping only the tree hashes still needed (see frontier), so its memory
// does not grow with the log.
func verify(ctx context.Context, r Reader, vkey string, saved []byte, from tlog.Tree, fromNote []byte) (*Report, error) {
	// The trusted part's tree hashes are the store's, read as needed.
	prior := map[int64]tlog.Hash{}
	stored := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		var need []int64
		for _, x := range idx {
			if _, ok := prior[x]; !ok {
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
			out[i] = prior[x]
		}
		return out, nil
	})
	f := newFrontier()
	if from.N > 0 {
		got, err := tlog.TreeHash(from.N, stored)
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
		proof, err := tlog.ProveRecord(from.N, last, stored)
		if err != nil {
			return nil, err
		}
		if tlog.CheckRecord(proof, from.N, from.Hash, last, tlog.RecordHash(recs[0].Data)) != nil {
			return nil, &Problem{Seq: last, Msg: "record differs from the one the trusted checkpoint covers (modified)"}
		}
		// The stream continues from the trusted tree's subtree roots.
		if err := f.start(from.N, stored); err != nil {
			return nil, err
		}
	}
	after := from.N - 1
	// readTo reads records, 1,000 at a time, until the tree has at least
	// want (all there are, if want < 0). Reading past a checkpoint's size
	// is fine: the frontier keeps what its tree needs.
	readTo := func(want int64) error {
		for want < 0 || f.n < want {
			recs, err := r.ReadAuditRecords(ctx, after, 1000)
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				return nil
			}
			idx := make([]int64, len(recs))
			for i := range recs {
				idx[i] = tlog.StoredHashIndex(0, f.n+int64(i))
			}
			leaves, err := r.ReadAuditHashes(ctx, idx)
			if err != nil {
				leaves = nil // not sealed yet: the checkpoints decide
			}
			for i, rec := range recs {
				n := f.n
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
				if leaves != nil && !bytes.Equal(leaves[i][:], h[:]) {
					return &Problem{Seq: n, Msg: "record differs from the hash stored when it was appended (modified)"}
				}
				hs, err := tlog.StoredHashesForRecordHash(n, h, f)
				if err != nil {
					return err
				}
				f.add(hs)
			}
			after = recs[len(recs)-1].Seq
		}
		return nil
	}
	lastGood := from.N
	// check reads the records t covers and compares their tree with it.
	check := func(t tlog.Tree, what string) error {
		if t.N < from.N { // within the trusted part: the store's hashes
			if got, err := tlog.TreeHash(t.N, stored); err != nil || got != t.Hash {
				return &Problem{Seq: -1, Msg: fmt.Sprintf("the %s signed at size %d does not match the trusted part of the log (%v)", what, t.N, err)}
			}
			return nil
		}
		if err := readTo(t.N); err != nil {
			return err
		}
		if f.n < t.N {
			return &Problem{Seq: f.n, Msg: fmt.Sprintf("log truncated: %s covers %d records but only %d remain", what, t.N, f.n)}
		}
		got, err := tlog.TreeHash(t.N, f)
		if err != nil {
			return err
		}
		if got != t.Hash {
			return &Problem{Seq: -1, Msg: fmt.Sprintf("a record in %d..%d was modified: the records do not match the %s signed at size %d", lastGood, t.N-1, what, t.N)}
		}
		lastGood = max(lastGood, t.N)
		f.check(t.N)
		return nil
	}
	var savedTree *tlog.Tree
	if saved != nil {
		t, err := ParseCheckpoint(saved, vkey)
		if err != nil {
			return nil, &Problem{Seq: -1, Msg: fmt.Sprintf("saved checkpoint: %v", err)}
		}
		savedTree = &t
	}
	rep := &Report{From: from.N, Tree: from, Checkpoint: fromNote}
	// The stored checkpoints in order of size, the saved one in its place;
	// those the trusted checkpoint covers are not read (all, from -1).
	cpsAfter := cmp.Or(from.N, -1)
	next := func() ([][]byte, error) {
		page, err := r.AuditCheckpoints(ctx, cpsAfter, checkpointPage)
		if err != nil {
			return nil, err
		}
		for _, cp := range page {
			t, err := ParseCheckpoint(cp, vkey)
			if err != nil {
				return nil, &Problem{Seq: -1, Msg: fmt.Sprintf("checkpoint: %v", err)}
			}
			if savedTree != nil && savedTree.N <= t.N {
				if err := check(*savedTree, "saved checkpoint"); err != nil {
					return nil, err
				}
				savedTree = nil
			}
			if err := check(t, "checkpoint"); err != nil {
				return nil, err
			}
			rep.Checkpoints++
			rep.Tree, rep.Checkpoint = t, cp
			cpsAfter = t.N
		}
		return page, nil
	}
	for {
		page, err := next()
		if err != nil {
			return nil, err
		}
		if len(page) < checkpointPage {
			break
		}
	}
	// Every record there now must be covered: read the rest, then wait for
	// newer checkpoints that cover them, checking each.
	if err := readTo(-1); err != nil {
		return nil, err
	}
	if savedTree != nil {
		if err := check(*savedTree, "saved checkpoint"); err != nil {
			return nil, err
		}
		savedTree = nil
	}
	target := f.n
	for deadline := time.Now().Add(SealWait); rep.Tree.N < target; {
		if time.Now().After(deadline) {
			return nil, &Problem{Seq: rep.Tree.N, Msg: "record is not covered by any signed checkpoint (inserted, or no gateway is running to seal it)"}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := next(); err != nil {
			return nil, err
		}
	}
	rep.Records = rep.Tree.N
	return rep, nil
}

// frontier is the tree hashes verification still needs: the roots of the
// complete subtrees of the last checked checkpoint's tree, and every hash
// computed for the records after it (a newer checkpoint's tree, and the
// next record's hashes, read only these). The rest is dropped once it
// holds more than frontierPrune hashes, so it stays under that plus the
// hashes of the records not yet covered by a checked checkpoint.
type frontier struct {
	n       int64 // records hashed
	checked int64 // size of the last checked tree
	hashes  map[int64]tlog.Hash
}

// frontierPrune is how many hashes the frontier holds before it drops
// those no longer needed (pruning after every checkpoint cost a fifth of
// verify's time: checkpoints come every few dozen records).
const frontierPrune = 4096

func newFrontier() *frontier { return &frontier{hashes: map[int64]tlog.Hash{}} }

// start begins after a verified tree of n records, reading its subtree
// roots from r.
func (f *frontier) start(n int64, r tlog.HashReader) error {
	idx := roots(n)
	hs, err := r.ReadHashes(idx)
	if err != nil {
		return err
	}
	for i, x := range idx {
		f.hashes[x] = hs[i]
	}
	f.n, f.checked = n, n
	return nil
}

// ReadHashes serves tlog from the frontier.
func (f *frontier) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		h, ok := f.hashes[x]
		if !ok {
			return nil, fmt.Errorf("audit: tree hash %d is not kept", x)
		}
		out[i] = h
	}
	return out, nil
}

// add keeps the stored hashes of the next record.
func (f *frontier) add(hs []tlog.Hash) {
	base := tlog.StoredHashIndex(0, f.n)
	for i, h := range hs {
		f.hashes[base+int64(i)] = h
	}
	f.n++
}

// check notes that the tree of n records was checked: what it and the
// records after it do not need may go.
func (f *frontier) check(n int64) {
	f.checked = n
	if len(f.hashes) > frontierPrune {
		f.prune()
	}
}

// prune drops the hashes the last checked tree and the records after it
// do not need.
func (f *frontier) prune() {
	n := f.checked
	keep := map[int64]bool{}
	for _, x := range roots(n) {
		keep[x] = true
	}
	// Hashes computed for records from n on stay (tlog stores a record's
	// hashes after those of the records before it); so do n's roots.
	first := tlog.StoredHashIndex(0, n)
	for x := range f.hashes {
		if !keep[x] && x < first {
			delete(f.hashes, x)
		}
	}
}

// roots are the stored-hash indexes of the complete subtrees that make up
// a tree of n records, largest first.
func roots(n int64) []int64 {
	var out []int64
	var start int64
	for level := 62; level >= 0; level-- {
		if size := int64(1) << level; n&size != 0 {
			out = append(out, tlog.StoredHashIndex(level, start>>level))
			start += size
		}
	}
	return out
}
