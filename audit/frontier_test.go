package audit

import (
	"fmt"
	"math/bits"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// The frontier gives the same tree hashes as keeping every hash, for
// every size checked along the way, while holding a bounded number of
// hashes (once pruned: only the subtree roots of the last checked size
// plus the hashes of the records after it) — so a full verify's memory
// does not grow with the log.
func TestFrontierKeepsOnlyWhatIsNeeded(t *testing.T) {
	all := map[int64]tlog.Hash{} // every hash, as the store keeps them
	full := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			h, ok := all[x]
			if !ok {
				return nil, fmt.Errorf("no hash %d", x)
			}
			out[i] = h
		}
		return out, nil
	})
	f := newFrontier()
	const records, every = 20000, 7 // a checkpoint every 7 records
	most := 0
	for n := int64(0); n < records; n++ {
		h := tlog.RecordHash([]byte(fmt.Sprint("record ", n)))
		want, err := tlog.StoredHashesForRecordHash(n, h, full)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tlog.StoredHashesForRecordHash(n, h, f)
		if err != nil {
			t.Fatalf("record %d: %v", n, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("record %d: hashes differ", n)
		}
		base := tlog.StoredHashIndex(0, n)
		for i, x := range want {
			all[base+int64(i)] = x
		}
		f.add(got)
		if size := n + 1; size%every == 0 || size == records {
			wantRoot, _ := tlog.TreeHash(size, full)
			gotRoot, err := tlog.TreeHash(size, f)
			if err != nil || gotRoot != wantRoot {
				t.Fatalf("size %d: root %v %v", size, gotRoot, err)
			}
			f.check(size)
			most = max(most, len(f.hashes))
			if size%(every*100) == 0 {
				f.prune()
				if roots := bits.OnesCount64(uint64(size)); len(f.hashes) != roots {
					t.Fatalf("size %d pruned: %d hashes kept, want its %d subtree roots", size, len(f.hashes), roots)
				}
			}
		}
	}
	// 20,000 records store ~40,000 hashes; the frontier held a bounded few.
	if most > frontierPrune+2*every+64 {
		t.Errorf("the frontier held up to %d hashes", most)
	}
	// A tree between two checked sizes is served too (a checkpoint written
	// after the records ahead of it were read).
	f2 := newFrontier()
	for n := int64(0); n < 100; n++ {
		hs, _ := tlog.StoredHashesForRecordHash(n, tlog.RecordHash([]byte(fmt.Sprint("record ", n))), f2)
		f2.add(hs)
		if n+1 == 40 {
			f2.check(40)
			f2.prune()
		}
	}
	for _, size := range []int64{41, 64, 77, 100} {
		want, _ := tlog.TreeHash(size, full)
		if got, err := tlog.TreeHash(size, f2); err != nil || got != want {
			t.Errorf("size %d after checking 40 and reading to 100: %v", size, err)
		}
	}
}
