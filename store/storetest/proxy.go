package storetest

import (
	"bytes"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy relays TCP connections to a database and can stop relaying, as a
// network partition does: what either side sends meanwhile is held (the
// other side's reads wait; nothing fails), and new connections are
// accepted but reach the database only once the partition heals. It can
// also hold only the database's answers (what the client sends still
// arrives and commits), and drop every connection, as a network that
// loses them does. A fake at the transport boundary: the database behind
// it is real.
type Proxy struct {
	ln       net.Listener
	target   string
	mu       sync.Mutex
	healed   *sync.Cond
	cut      bool
	quiet    bool   // the database's answers are held
	marker   []byte // once a client sends it, quiet (or cut, if markCuts)
	markCuts bool
	closed   bool
	held     int
	conns    []net.Conn
}

// NewProxy relays to the host and port of the database URL dbURL and
// returns the proxy and dbURL pointing at it. It stops with the test.
func NewProxy(t testing.TB, dbURL string) (*Proxy, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: u.Host}
	p.healed = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	u.Host = ln.Addr().String()
	return p, u.String()
}

// Cut stops relaying.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// CutAnswersAfter stops relaying what the database sends from the moment
// a client sends marker (a statement's parameter, say), which still
// reaches the database: it runs, and its answer is held.
func (p *Proxy) CutAnswersAfter(marker string) {
	p.mu.Lock()
	p.marker, p.markCuts = []byte(marker), false
	p.mu.Unlock()
}

// CutAt cuts (as Cut) from the moment a client sends marker: what
// carries it is held, so the database never sees it unless the cut heals.
func (p *Proxy) CutAt(marker string) {
	p.mu.Lock()
	p.marker, p.markCuts = []byte(marker), true
	p.mu.Unlock()
}

// Heal relays again, what was held first.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut, p.quiet, p.marker = false, false, nil
	p.healed.Broadcast()
	p.mu.Unlock()
}

// Drop closes every connection relayed so far, losing what was held, and
// relays new ones.
func (p *Proxy) Drop() {
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.cut, p.quiet, p.marker = false, false, nil
	p.healed.Broadcast()
	p.mu.Unlock()
}

// Held is how many bytes were received while cut and not relayed yet.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.cut, p.quiet, p.marker = false, false, nil
	p.healed.Broadcast()
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

// track remembers c to close it with the proxy; false once closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *Proxy) relay(client net.Conn) {
	if !p.track(client) {
		return
	}
	p.mu.Lock()
	for p.cut {
		p.healed.Wait()
	}
	p.mu.Unlock()
	db, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(db) {
		client.Close()
		return
	}
	go p.pipe(db, client, false)
	p.pipe(client, db, true)
}

// pipe copies src to dst, holding each chunk while the proxy is cut (or,
// for the database's answers, quiet).
func (p *Proxy) pipe(dst, src net.Conn, answers bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if !answers && p.marker != nil && bytes.Contains(buf[:n], p.marker) {
				// Before the database can answer (or, cutting, see it).
				p.quiet, p.cut = !p.markCuts, p.markCuts
				p.marker = nil
			}
			if p.cut || answers && p.quiet {
				p.held += n
				for p.cut || answers && p.quiet {
					p.healed.Wait()
				}
				p.held -= n
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF or closed: the other side's pipe ends too
			return
		}
	}
}
