package blob_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie/store/blob"
)

func siteKey(t *testing.T, dir string) *blob.SiteKey {
	t.Helper()
	k, err := blob.WriteKeyFile(filepath.Join(dir, "site.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestEncryptedRoundTrip(t *testing.T) {
	dir := t.TempDir()
	k := siteKey(t, dir)
	s, err := blob.Open(filepath.Join(dir, "blobs"), blob.WithSiteKey(k))
	if err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("Subject: hello\r\n\r\nsome text that compresses\r\n"), 40)
	// Sizes around the 64 KiB chunk of the compressed stream: random
	// bytes do not compress, so the stream is a little longer.
	for i, body := range [][]byte{{}, []byte("x"), text, randomBytes(64<<10-20, 1), randomBytes(64<<10, 2), randomBytes(3<<20+7, 3)} {
		put := s.Put
		if i%2 == 1 {
			put = func(b []byte) (blob.Info, error) { return s.PutReader(bytes.NewReader(b)) }
		}
		info, err := put(body)
		if err != nil || !info.Created {
			t.Fatalf("body %d: %+v %v", i, info, err)
		}
		if ok, _ := s.Encrypted(info.Digest); !ok {
			t.Fatalf("body %d not encrypted", i)
		}
		raw, _ := os.ReadFile(s.Path(info.Digest))
		if len(body) > 100 && bytes.Contains(raw, body[:100]) {
			t.Fatalf("body %d: plaintext in the file", i)
		}
		got, err := s.Get(info.Digest)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("body %d: %d bytes, %v", i, len(got), err)
		}
		// Dedup: the second Put writes nothing.
		if again, err := s.Put(body); err != nil || again.Created {
			t.Fatalf("body %d stored twice: %+v %v", i, again, err)
		}
	}
	n := 0
	if err := s.Walk(t.Context(), func(d string, _ int64, err error) error {
		if err != nil {
			t.Error(err)
		}
		n++
		return nil
	}); err != nil || n != 6 {
		t.Fatalf("walk: %d files, %v", n, err)
	}

	// Without the site key, or with another, nothing is readable.
	d := blob.Digest(text)
	plain, _ := blob.Open(filepath.Join(dir, "blobs"))
	if _, err := plain.Get(d); !errors.Is(err, blob.ErrNoSiteKey) {
		t.Errorf("no key: %v", err)
	}
	other, _ := blob.NewSiteKey(bytes.Repeat([]byte{7}, 32))
	wrong, _ := blob.Open(filepath.Join(dir, "blobs"), blob.WithSiteKey(other))
	if _, err := wrong.Get(d); !errors.Is(err, blob.ErrWrongSiteKey) {
		t.Errorf("wrong key: %v", err)
	}
	// The key file loads back, and one others can read is refused.
	if k2, err := blob.LoadKeyFile(filepath.Join(dir, "site.key")); err != nil || k2.ID() != k.ID() {
		t.Errorf("load: %v", err)
	}
	os.Chmod(filepath.Join(dir, "site.key"), 0o644)
	if _, err := blob.LoadKeyFile(filepath.Join(dir, "site.key")); err == nil {
		t.Error("a world-readable key file was accepted")
	}
}

func TestEncryptedTamperingIsDetected(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.Open(filepath.Join(dir, "blobs"), blob.WithSiteKey(siteKey(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	body := randomBytes(200<<10, 9)
	info, err := s.Put(body)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Path(info.Digest)
	orig, _ := os.ReadFile(p)
	for name, alter := range map[string]func([]byte) []byte{
		"flipped bit":    func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"last cut":       func(b []byte) []byte { return b[:len(b)-(len(b)-20)%(64<<10+16)] },
		"truncated":      func(b []byte) []byte { return b[:len(b)-1] },
		"header changed": func(b []byte) []byte { b[5] ^= 1; return b },
	} {
		os.Chmod(p, 0o600)
		if err := os.WriteFile(p, alter(bytes.Clone(orig)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := s.Verify(info.Digest)
		var ce *blob.CorruptError
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v, want a CorruptError", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestErase(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.Open(filepath.Join(dir, "blobs"), blob.WithSiteKey(siteKey(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("Subject: personal\r\n\r\nsecret\r\n")
	info, _ := s.Put(body)
	if err := s.Erase(info.Digest, "position 7"); err != nil {
		t.Fatal(err)
	}
	if err := s.Erase(info.Digest, "position 7"); err != nil {
		t.Fatalf("erase again: %v", err)
	}
	_, err = s.Get(info.Digest)
	var ge *blob.GoneError
	if !errors.As(err, &ge) || !errors.Is(err, blob.ErrErased) || !strings.Contains(err.Error(), "position 7") {
		t.Fatalf("after erasure: %v", err)
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "blobs", "keys", "*", "*"))
	if len(keys) != 0 {
		t.Errorf("keys left: %v", keys)
	}
	if ok, _ := s.Has(info.Digest); ok {
		t.Error("Has after erasure")
	}
	// A new delivery of the same bytes is stored anew.
	if again, err := s.Put(body); err != nil || !again.Created {
		t.Fatalf("put after erasure: %+v %v", again, err)
	}
	if got, err := s.Get(info.Digest); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("after a new delivery: %v", err)
	}

	// A plain body (stored before encryption) is deleted; purge says so.
	plain, _ := blob.Open(filepath.Join(dir, "blobs"))
	pinfo, _ := plain.Put([]byte("plain"))
	if err := s.Purge(pinfo.Digest, "policy x"); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Get(pinfo.Digest); !errors.Is(err, blob.ErrPurged) {
		t.Errorf("after purge: %v", err)
	}
}

func TestEncryptedConcurrentPuts(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.Open(filepath.Join(dir, "blobs"), blob.WithSiteKey(siteKey(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	shared := randomBytes(100<<10, 42)
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			var err error
			for i := range 5 {
				if _, err = s.Put(shared); err != nil {
					break
				}
				if _, err = s.PutReader(bytes.NewReader(randomBytes(10<<10, uint64(100*w+i)))); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.Get(blob.Digest(shared)); err != nil || !bytes.Equal(got, shared) {
		t.Fatalf("shared body: %v", err)
	}
	// One key per body: the writers that lost the race removed theirs.
	keys, _ := filepath.Glob(filepath.Join(dir, "blobs", "keys", "*", "*.key"))
	if len(keys) != 41 {
		t.Errorf("%d key files, want 41", len(keys))
	}
}
