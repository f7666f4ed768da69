// Package audit keeps the tamper-evident log: every event is a record in an
// RFC 6962 hash tree (golang.org/x/mod/sumdb/tlog), each committed batch ends
// with an Ed25519-signed checkpoint (sumdb/note), and Verify detects any
// modified, removed, reordered or inserted record. Storage stays outside: the
// log talks to a small Store its users provide.
//
// Appends are group-committed: concurrent callers share one transaction, and
// each returns only once its records are durable. A caller whose append fails
// must not act on the event (fail closed).
package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentg8/agentg8"
)

// Origin is the first line of every checkpoint.
const Origin = "agentg8 audit log"

// IndexedHash is one stored tree hash.
type IndexedHash struct {
	Index int64
	Hash  tlog.Hash
}

// Batch is one atomic append: records Start.. with their tree hashes and the
// signed checkpoint of the new tree.
type Batch struct {
	Start      int64
	Records    []Record
	Hashes     []IndexedHash
	Checkpoint []byte
	Size       int64
	// Changes are state writes to apply in the same transaction, one slot
	// per append in the batch (nil when that append carries none).
	Changes []any
}

// HashRuns groups hashes into runs of consecutive indexes, as stores keep
// them: a batch's or a seal's hashes are one run.
func HashRuns(hs []IndexedHash) (starts []int64, runs [][]byte) {
	for i, h := range hs {
		if i == 0 || h.Index != hs[i-1].Index+1 {
			starts, runs = append(starts, h.Index), append(runs, nil)
		}
		runs[len(runs)-1] = append(runs[len(runs)-1], h.Hash[:]...)
	}
	return starts, runs
}

// ErrNotWritten marks an error after which nothing of the batch can have
// been committed: the batch never reached the store, or the store rolled
// it back and said so. An error from Commit without it may hide a batch
// that was committed (the connection was lost before the store's answer
// arrived). Stores wrap their errors with it when they can tell.
var ErrNotWritten = errors.New("nothing was written")

// ChangeError is a store's refusal of one change in a batch.
type ChangeError struct {
	Index int
	Err   error
}

func (e *ChangeError) Error() string { return fmt.Sprintf("change %d: %v", e.Index, e.Err) }
func (e *ChangeError) Unwrap() error { return e.Err }

// Record is a stored record. ActionID is kept beside the data for look-ups;
// only Data is hashed.
type Record struct {
	Seq      int64
	ActionID string
	Data     []byte
}

// BuildFunc computes a batch for a log of the given size; read returns
// stored hashes as of that size.
type BuildFunc func(size int64, read func(indexes []int64) ([]tlog.Hash, error)) (Batch, error)

// Store is what the log needs from persistence, plus one of the two ways
// of appending: BatchStore or SequencedStore.
type Store interface {
	LatestAuditCheckpoint(ctx context.Context) ([]byte, error)
}

// BatchStore appends whole sealed batches: positions, hashes and the
// signed checkpoint are computed under the store's append lock and written
// with the records. Right for a store one process writes (SQLite), where
// holding that lock costs no round trip.
type BatchStore interface {
	Store
	// AppendAudit takes the log's append lock, calls build with the current
	// size, and writes the batch (records, hashes, checkpoint, changes)
	// atomically. A refused change fails the whole call with a *ChangeError.
	AppendAudit(ctx context.Context, build BuildFunc) error
}

// Pending is a record whose position the store assigns as it commits: the
// stored data is {"seq":<position> followed by Tail.
type Pending struct {
	ActionID string
	Tail     []byte
}

// SealFunc computes the stored hashes for records, which follow the size
// records sealed so far, and the signed checkpoint of the tree they end.
type SealFunc func(size int64, records []Record, read func(indexes []int64) ([]tlog.Hash, error)) ([]IndexedHash, []byte, error)

// SequencedStore is a store several processes append to (PostgreSQL with
// replicas). An append takes the next positions at commit, inside the
// database, so no process holds the log's head across a round trip; the
// records' hashes and a signed checkpoint are added moments later by
// SealAudit, under a separate lock, covering every process's records.
type SequencedStore interface {
	Store
	// AppendRecords durably appends records at the log's head together
	// with the changes, atomically, and returns the first record's
	// position. A refused change fails the whole call with a *ChangeError.
	AppendRecords(ctx context.Context, records []Pending, changes []any) (start int64, err error)
	// SealAudit takes the seal lock without waiting (ok is false if another
	// process holds it, or if any process sealed less than gap ago), reads
	// up to limit records after the sealed size, calls seal and stores its
	// hashes and checkpoint with the new sealed size in one transaction; n
	// is how many records it sealed.
	SealAudit(ctx context.Context, limit int, gap time.Duration, seal SealFunc) (n int, ok bool, err error)
}

// Options tune a Log.
type Options struct {
	Clock    agentg8.Clock
	Logger   *slog.Logger
	MaxBatch int
	// Observe, if set, is told each batch's commit latency and size.
	Observe func(d time.Duration, n int)
	// ObserveSeal, if set, is told each seal attempt's result — "sealed"
	// (n records), "idle" (nothing to seal), "busy" (another process was
	// sealing) or "error" — on stores that seal apart from appends.
	ObserveSeal func(result string, n int)
	// SealGrace is how long sealing may keep failing before the log stops
	// taking appends (fail closed) and Health reports it; default 10 s.
	SealGrace time.Duration
}

// Log appends events. Safe for concurrent use.
type Log struct {
	store  Store
	batch  BatchStore     // set when the store appends sealed batches
	seq    SequencedStore // set when the store sequences and seals apart
	key    *Key
	opts   Options
	reqs   chan *appendReq
	done   chan struct{}
	closed sync.Once
	// cache holds committed tree hashes; the appender (batch stores) or
	// the sealer (sequenced stores) uses it, never both.
	cache map[int64]tlog.Hash
	// The sealer (sequenced stores only).
	sealKick chan struct{}
	sealStop chan struct{}
	sealDone chan struct{}
	sealMu   sync.Mutex
	sealErr  error     // the last seal's error, nil after a success
	failing  time.Time // when seals started failing
}

const (
	// sealLimit bounds the records one seal transaction covers.
	sealLimit = 4096
	// sealEvery is the shortest time between seals, by all processes
	// together: more replicas do not mean more seals.
	sealEvery = 10 * time.Millisecond
)

type appendReq struct {
	ctx    context.Context
	change any
	events []*agentg8.AuditEvent
	bodies [][]byte // the events' JSON without position and time
	done   chan error
}

// zeroHead is how an event's JSON starts before the log gives it a position
// and a time; both members come first (agentg8.AuditEvent's field order).
var zeroHead = []byte(`{"seq":0,"time":"0001-01-01T00:00:00Z",`)

// encodeBody encodes ev without its position and time. Callers do this
// before queueing, so the single writer only splices the two in: encoding
// is a sizeable share of a batch, and callers run in parallel.
func encodeBody(ev *agentg8.AuditEvent) ([]byte, error) {
	e := *ev
	e.Seq, e.Time = 0, time.Time{}
	b, err := json.Marshal(&e)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(b, zeroHead) {
		return nil, fmt.Errorf("audit event encodes as %.40q…, not seq and time first", b)
	}
	return b[len(zeroHead):], nil
}

// place completes an encoded body with its position and time (timeJSON is
// the time's JSON), giving the bytes json.Marshal gives for the full event.
func place(seq int64, timeJSON, body []byte) []byte {
	out := make([]byte, 0, len(body)+len(timeJSON)+32)
	out = append(out, `{"seq":`...)
	out = strconv.AppendInt(out, seq, 10)
	return appendTail(out, timeJSON, body)
}

// appendTail appends what follows the position in a record: its time and
// body. A sequenced store prefixes it with {"seq":<position>.
func appendTail(out, timeJSON, body []byte) []byte {
	out = append(out, `,"time":`...)
	out = append(out, timeJSON...)
	out = append(out, ',')
	return append(out, body...)
}

// Open starts a log over s.
func Open(s Store, key *Key, opts Options) *Log {
	if opts.Clock == nil {
		opts.Clock = agentg8.SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.SealGrace <= 0 {
		opts.SealGrace = 10 * time.Second
	}
	l := &Log{store: s, key: key, opts: opts, reqs: make(chan *appendReq, 1024), done: make(chan struct{}), cache: map[int64]tlog.Hash{}}
	l.batch, _ = s.(BatchStore)
	if l.batch == nil {
		l.seq, _ = s.(SequencedStore)
	}
	if l.seq != nil {
		l.sealKick, l.sealStop, l.sealDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
		l.sealKick <- struct{}{} // seal what a stopped process left unsealed
		go l.sealLoop()
	}
	go l.run()
	return l
}

// Close stops the appender after pending appends finish, and seals them.
func (l *Log) Close() {
	l.closed.Do(func() {
		close(l.reqs)
		<-l.done
		if l.seq != nil {
			close(l.sealStop)
			<-l.sealDone
		}
	})
}

// Append durably records events, in order, and sets their Seq and Time.
// It returns only when they are committed, or with an error.
func (l *Log) Append(ctx context.Context, events ...*agentg8.AuditEvent) error {
	return l.Commit(ctx, nil, events...)
}

// Commit is Append with a state change the store applies in the same
// transaction as the events: both are durable, or neither is. The change is
// opaque to the log; a store that refuses it answers with a *ChangeError and
// only this call fails.
func (l *Log) Commit(ctx context.Context, change any, events ...*agentg8.AuditEvent) (err error) {
	defer func() {
		if r := recover(); r != nil { // appending after Close
			err = fmt.Errorf("audit: log is closed: %w", ErrNotWritten)
		}
	}()
	// Records no checkpoint covers are not tamper-evident: when sealing
	// keeps failing, nothing more is appended, so nothing more executes.
	if err := l.Health(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotWritten, err)
	}
	req := &appendReq{ctx: ctx, change: change, events: events, bodies: make([][]byte, len(events)), done: make(chan error, 1)}
	for i, ev := range events {
		if req.bodies[i], err = encodeBody(ev); err != nil {
			return fmt.Errorf("audit: %w: %w", ErrNotWritten, err)
		}
	}
	select {
	case l.reqs <- req:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotWritten, ctx.Err())
	}
	// Wait even if ctx ends: the batch may already be committing, and the
	// caller must learn whether its intent is durable.
	return <-req.done
}

func (l *Log) run() {
	defer close(l.done)
	for req := range l.reqs {
		batch := []*appendReq{req}
		n := len(req.events)
	collect:
		for n < l.opts.MaxBatch {
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
				n += len(r.events)
			default:
				break collect
			}
		}
		l.commit(batch)
	}
}

// commit writes a batch and answers every request in it. A request whose
// change is refused (e.g. a lost compare-and-set) fails alone; the rest are
// retried without it.
func (l *Log) commit(batch []*appendReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	// Every failed try either drops the one refused change or gives up, so
	// this ends.
	for len(batch) > 0 {
		start := time.Now()
		var n int
		n, err = l.tryCommit(ctx, batch)
		if err == nil {
			if l.opts.Observe != nil {
				l.opts.Observe(time.Since(start), n)
			}
			for _, r := range batch {
				r.done <- nil
			}
			return
		}
		var ce *ChangeError
		if !errors.As(err, &ce) || ce.Index < 0 || ce.Index >= len(batch) {
			break
		}
		batch[ce.Index].done <- fmt.Errorf("%w: %w", ErrNotWritten, ce.Err) // the store rolled the batch back
		batch = append(batch[:ce.Index:ce.Index], batch[ce.Index+1:]...)
	}
	if len(batch) == 0 {
		return
	}
	l.opts.Logger.Error("audit append failed", "err", err)
	for _, r := range batch {
		r.done <- fmt.Errorf("audit append: %w", err)
	}
}

// hashReader reads tree hashes from fresh (this batch's), then the cache of
// committed hashes, then the store.
func (l *Log) hashReader(fresh map[int64]tlog.Hash, read func([]int64) ([]tlog.Hash, error)) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		var miss []int64
		var missAt []int
		for i, x := range idx {
			if h, ok := fresh[x]; ok {
				out[i] = h
			} else if h, ok := l.cache[x]; ok {
				out[i] = h
			} else {
				miss = append(miss, x)
				missAt = append(missAt, i)
			}
		}
		if len(miss) > 0 {
			got, err := read(miss)
			if err != nil {
				return nil, err
			}
			for j, i := range missAt {
				out[i] = got[j]
				l.cache[miss[j]] = got[j] // committed hashes never change
			}
		}
		return out, nil
	})
}

// remember caches a committed batch's hashes.
func (l *Log) remember(hashes map[int64]tlog.Hash) {
	if len(l.cache) > 1<<16 {
		clear(l.cache)
	}
	for k, v := range hashes {
		l.cache[k] = v
	}
}

func (l *Log) tryCommit(ctx context.Context, batch []*appendReq) (int, error) {
	now := l.opts.Clock.Now().UTC()
	timeJSON, err := now.MarshalJSON()
	if err != nil {
		return 0, err
	}
	if l.seq != nil {
		return l.appendRecords(ctx, batch, now, timeJSON)
	}
	if l.batch == nil {
		return 0, fmt.Errorf("audit: store %T can append neither batches nor records", l.store)
	}
	var newHashes map[int64]tlog.Hash
	var n, size int64
	// The store calls build under its append lock, with the log's size at
	// that moment: positions and hashes are computed where no other writer
	// can interleave.
	build := func(start int64, read func([]int64) ([]tlog.Hash, error)) (Batch, error) {
		size = start
		b := Batch{Start: start}
		newHashes = map[int64]tlog.Hash{}
		reader := l.hashReader(newHashes, read)
		n = start
		b.Changes = make([]any, len(batch))
		for i, r := range batch {
			b.Changes[i] = r.change
			for j, ev := range r.events {
				ev.Seq = n
				ev.Time = now
				data := place(n, timeJSON, r.bodies[j])
				hs, err := tlog.StoredHashes(n, data, reader)
				if err != nil {
					return b, err
				}
				base := tlog.StoredHashIndex(0, n)
				for i, h := range hs {
					newHashes[base+int64(i)] = h
					b.Hashes = append(b.Hashes, IndexedHash{Index: base + int64(i), Hash: h})
				}
				b.Records = append(b.Records, Record{Seq: n, ActionID: ev.ActionID, Data: data})
				n++
			}
		}
		root, err := tlog.TreeHash(n, reader)
		if err != nil {
			return b, err
		}
		b.Size = n
		b.Checkpoint, err = l.sign(n, root)
		return b, err
	}
	if err := l.batch.AppendAudit(ctx, build); err != nil {
		return 0, err
	}
	l.remember(newHashes)
	return int(n - size), nil
}

// appendRecords appends a batch to a sequenced store, which places it, and
// wakes the sealer. Callers are answered once the records are durable; the
// signed checkpoint covering them follows within moments.
func (l *Log) appendRecords(ctx context.Context, batch []*appendReq, now time.Time, timeJSON []byte) (int, error) {
	var recs []Pending
	changes := make([]any, len(batch))
	for i, r := range batch {
		changes[i] = r.change
		for j, ev := range r.events {
			recs = append(recs, Pending{ActionID: ev.ActionID, Tail: appendTail(nil, timeJSON, r.bodies[j])})
		}
	}
	start, err := l.seq.AppendRecords(ctx, recs, changes)
	if err != nil {
		return 0, err
	}
	n := start
	for _, r := range batch {
		for _, ev := range r.events {
			ev.Seq, ev.Time = n, now
			n++
		}
	}
	select {
	case l.sealKick <- struct{}{}:
	default:
	}
	return len(recs), nil
}

func (l *Log) sealLoop() {
	defer close(l.sealDone)
	// Also seal now and then unprompted: a replica that stopped between an
	// append and its seal leaves records only another can seal, and a seal
	// that failed is retried.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-l.sealStop:
			l.sealFinal()
			return
		case <-l.sealKick:
		case <-tick.C:
		}
		if l.sealAll() {
			// Another process is sealing, and may have read the records
			// before this one's last append committed: try again after the
			// pause rather than wait for it.
			select {
			case l.sealKick <- struct{}{}:
			default:
			}
		}
		// Nobody waits for a seal, so let appends gather: fewer, larger
		// seals cost the database less (one checkpoint each).
		select {
		case <-l.sealStop:
			l.sealFinal()
			return
		case <-time.After(sealEvery):
		}
	}
}

// sealFinal seals at Close, waiting a little while another process holds
// the seal lock.
func (l *Log) sealFinal() {
	for i := 0; i < 100 && l.sealAll(); i++ {
		time.Sleep(sealEvery)
	}
}

// sealAll seals every record committed so far; busy reports that another
// process held the seal lock, so some may be left.
func (l *Log) sealAll() (busy bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		var fresh map[int64]tlog.Hash
		seal := func(size int64, recs []Record, read func([]int64) ([]tlog.Hash, error)) ([]IndexedHash, []byte, error) {
			fresh = map[int64]tlog.Hash{}
			reader := l.hashReader(fresh, read)
			var out []IndexedHash
			n := size
			for _, r := range recs {
				if r.Seq != n {
					return nil, nil, fmt.Errorf("audit record %d found where %d belongs", r.Seq, n)
				}
				hs, err := tlog.StoredHashes(n, r.Data, reader)
				if err != nil {
					return nil, nil, err
				}
				base := tlog.StoredHashIndex(0, n)
				for i, h := range hs {
					fresh[base+int64(i)] = h
					out = append(out, IndexedHash{Index: base + int64(i), Hash: h})
				}
				n++
			}
			root, err := tlog.TreeHash(n, reader)
			if err != nil {
				return nil, nil, err
			}
			cp, err := l.sign(n, root)
			return out, cp, err
		}
		n, ok, err := l.seq.SealAudit(ctx, sealLimit, sealEvery, seal)
		l.sealed(n, ok, err)
		if err != nil {
			l.opts.Logger.Error("audit seal failed", "err", err)
			return false
		}
		if !ok {
			return true
		}
		l.remember(fresh)
		if n < sealLimit {
			return false
		}
	}
}

// sealed notes a seal attempt's result.
func (l *Log) sealed(n int, ok bool, err error) {
	if l.opts.ObserveSeal != nil {
		switch {
		case err != nil:
			l.opts.ObserveSeal("error", 0)
		case !ok:
			l.opts.ObserveSeal("busy", 0)
		case n == 0:
			l.opts.ObserveSeal("idle", 0)
		default:
			l.opts.ObserveSeal("sealed", n)
		}
	}
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	if err == nil {
		// Another process sealing (busy) is sealing for everyone.
		l.sealErr, l.failing = nil, time.Time{}
		return
	}
	if l.sealErr == nil {
		l.failing = time.Now()
	}
	l.sealErr = err
}

// Health reports whether records are being sealed: an error once seals
// have failed for longer than Options.SealGrace (the sealer retries every
// second, and appends are refused until one succeeds). Always nil on
// stores that seal as they append.
func (l *Log) Health() error {
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	if l.sealErr != nil && time.Since(l.failing) > l.opts.SealGrace {
		return fmt.Errorf("audit: records have not been sealed for %s: %w", time.Since(l.failing).Round(time.Second), l.sealErr)
	}
	return nil
}

func (l *Log) sign(n int64, root tlog.Hash) ([]byte, error) {
	text := FormatTree(tlog.Tree{N: n, Hash: root})
	return note.Sign(&note.Note{Text: text}, l.key.Signer)
}

// FormatTree renders a checkpoint body: origin, size, base64 root hash.
func FormatTree(t tlog.Tree) string {
	return fmt.Sprintf("%s\n%d\n%s\n", Origin, t.N, base64.StdEncoding.EncodeToString(t.Hash[:]))
}

// ParseCheckpoint verifies a signed checkpoint with vkey and returns its tree.
func ParseCheckpoint(msg []byte, vkey string) (tlog.Tree, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 3 || lines[0] != Origin {
		return tlog.Tree{}, errors.New("checkpoint: not an agentg8 audit checkpoint")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return tlog.Tree{}, errors.New("checkpoint: bad size")
	}
	hb, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(hb) != tlog.HashSize {
		return tlog.Tree{}, errors.New("checkpoint: bad root hash")
	}
	var h tlog.Hash
	copy(h[:], hb)
	return tlog.Tree{N: size, Hash: h}, nil
}

// Checkpoint returns the latest signed checkpoint.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	return l.store.LatestAuditCheckpoint(ctx)
}
