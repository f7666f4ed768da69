package credential

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// issuer is an identity provider serving discovery and an empty key set;
// hold makes its discovery wait until released, fail makes it answer 500.
type issuer struct {
	srv        *httptest.Server
	discovered atomic.Int32
	hold       chan struct{}
	fail       bool
}

func newIssuer(t *testing.T, hold chan struct{}, fail bool) *issuer {
	is := &issuer{hold: hold, fail: fail}
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{})
			return
		}
		is.discovered.Add(1)
		if is.hold != nil {
			<-is.hold
		}
		if is.fail {
			w.WriteHeader(500)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks"})
	}))
	t.Cleanup(is.srv.Close)
	return is
}

// Callers needing a slow issuer's keys share one fetch, and a failing
// one's failure, instead of each fetching in turn behind a lock (N
// callers used to wait N fetches, 15 s each when the issuer hangs); and
// another issuer's callers are not held up meanwhile.
func TestIssuerKeysAreFetchedOnceAndApart(t *testing.T) {
	c := &jwksCache{keys: map[string]jose.JSONWebKeySet{}, fetched: map[string]time.Time{}, client: &http.Client{Timeout: 5 * time.Second}}
	ctx, now := context.Background(), time.Now()
	for _, fail := range []bool{false, true} {
		hold := make(chan struct{})
		slow, fast := newIssuer(t, hold, fail), newIssuer(t, nil, false)
		var wg, started sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			started.Add(1)
			go func() {
				defer wg.Done()
				started.Done()
				_, err := c.get(ctx, slow.srv.URL, now)
				errs <- err
			}()
		}
		started.Wait()
		for slow.discovered.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // every caller is waiting on the fetch
		other := make(chan error, 1)
		go func() {
			_, err := c.get(ctx, fast.srv.URL, now)
			other <- err
		}()
		select {
		case err := <-other:
			if err != nil {
				t.Errorf("the other issuer: %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Error("the other issuer's keys waited for the slow issuer")
		}
		close(hold) // only now does the slow issuer answer
		wg.Wait()
		close(errs)
		for err := range errs {
			if (err != nil) != fail {
				t.Errorf("failing issuer %v: %v", fail, err)
			}
		}
		if n := slow.discovered.Load(); n != 1 {
			t.Errorf("failing issuer %v: %d discovery requests for 8 callers, want 1", fail, n)
		}
	}
}
