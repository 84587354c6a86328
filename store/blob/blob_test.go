package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/bonnie-archive/bonnie/store/blob"
)

func open(t testing.TB) *blob.Store {
	t.Helper()
	s, err := blob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Bodies that must come back byte for byte: what a mail store really
// holds, not what a MIME parser would like it to hold.
func corpus(t testing.TB) map[string][]byte {
	t.Helper()
	bin := make([]byte, 300_000)
	if _, err := rand.Read(bin); err != nil {
		t.Fatal(err)
	}
	large := bytes.Repeat([]byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n"), 5<<20/58+1)[:5<<20]
	return map[string][]byte{
		"empty": {},
		"8bit": []byte("From: J\xc3\xbcrgen <j@example.org>\r\nSubject: Gr\xfc\xdfe \xe2\x82\xac\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			"Stra\xc3\x9fe, na\xefve latin-1 \xe9 and a NUL \x00 and a bare CR\r here\n and LF only\n"),
		"binary attachment": append([]byte("From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"+
			"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"), append(bin, []byte("\r\n--XX--\r\n")...)...),
		"broken MIME": []byte("From a@b Mon Jan  1 00:00:00 2024\nContent-Type: multipart/mixed; boundary=\"unterminated\r\n" +
			"Header-Without-Colon\r\n\r\n--unterminated\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64===\r\n" +
			"From the middle of a line\r\n>From quoted\r\n"),
		"no final newline": []byte("Subject: x\r\n\r\nends without CRLF"),
		"5 MB":             large,
	}
}

func TestByteForByte(t *testing.T) {
	s := open(t)
	for name, body := range corpus(t) {
		t.Run(name, func(t *testing.T) {
			info, err := s.Put(body)
			if err != nil {
				t.Fatal(err)
			}
			if info.Digest != sum(body) || info.Size != int64(len(body)) || !info.Created {
				t.Fatalf("Put = %+v, want digest %s size %d created", info, sum(body), len(body))
			}
			got, err := s.Get(info.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("Get returned %d different bytes", len(got))
			}
			// The file is a plain zstd frame: readable without the store.
			raw, err := os.ReadFile(s.Path(info.Digest))
			if err != nil {
				t.Fatal(err)
			}
			dec, _ := zstd.NewReader(nil)
			defer dec.Close()
			plain, err := dec.DecodeAll(raw, nil)
			if err != nil || !bytes.Equal(plain, body) {
				t.Fatalf("plain zstd decode: %v, equal %v", err, bytes.Equal(plain, body))
			}
			if n, err := s.Verify(info.Digest); err != nil || n != int64(len(body)) {
				t.Fatalf("Verify = %d, %v", n, err)
			}
		})
	}
}

func TestZstdCommandLineReadsTheFiles(t *testing.T) {
	if _, err := exec.LookPath("zstd"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no zstd command: .ci/run installs it")
		}
		t.Skip("no zstd command (apt-get install zstd)")
	}
	s := open(t)
	body := corpus(t)["8bit"]
	info, err := s.Put(body)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("zstd", "-d", "-c", s.Path(info.Digest)).Output()
	if err != nil || !bytes.Equal(out, body) {
		t.Fatalf("zstd -d: %v, equal %v", err, bytes.Equal(out, body))
	}
}

func TestPutReaderMatchesPut(t *testing.T) {
	s := open(t)
	for name, body := range corpus(t) {
		info, err := s.PutReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(name, err)
		}
		if info.Digest != sum(body) || info.Size != int64(len(body)) || !info.Created {
			t.Fatalf("%s: PutReader = %+v", name, info)
		}
		again, err := s.Put(body)
		if err != nil || again.Created || again.Digest != info.Digest {
			t.Fatalf("%s: Put after PutReader = %+v, %v", name, again, err)
		}
		got, err := s.Get(info.Digest)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%s: Get: %v", name, err)
		}
	}
}

func TestDedupWritesOnce(t *testing.T) {
	s := open(t)
	body := []byte("Subject: to 500 recipients\r\n\r\nhello\r\n")
	first, err := s.Put(body)
	if err != nil || !first.Created || first.Stored == 0 {
		t.Fatalf("first Put = %+v, %v", first, err)
	}
	fi1, err := os.Stat(s.Path(first.Digest))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 499; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var info blob.Info
			var err error
			if i%2 == 0 {
				info, err = s.Put(body)
			} else {
				info, err = s.PutReader(bytes.NewReader(body))
			}
			if err != nil || info.Created || info.Digest != first.Digest {
				t.Errorf("Put %d = %+v, %v", i, info, err)
			}
		}()
	}
	wg.Wait()
	fi2, err := os.Stat(s.Path(first.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fi1, fi2) || !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Fatal("the file was replaced")
	}
	if n := countFiles(t, s); n != 1 {
		t.Fatalf("%d body files, want 1", n)
	}
	assertNoTemp(t, s)
}

// Writers racing on a body nobody has yet: exactly one creates the file,
// everyone gets the same digest, no temporary file is left.
func TestConcurrentFirstWrites(t *testing.T) {
	s := open(t)
	body := bytes.Repeat([]byte("race\r\n"), 100_000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := s.PutReader(bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			if info.Created {
				mu.Lock()
				created++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if created != 1 {
		t.Fatalf("%d writers created the file, want 1", created)
	}
	assertNoTemp(t, s)
	if got, err := s.Get(sum(body)); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Get: %v", err)
	}
}

// A file already there is never replaced, even when it is damaged and the
// new bytes are right: damage is reported (Verify), not papered over.
func TestNeverOverwrites(t *testing.T) {
	s := open(t)
	body := []byte("Subject: keep\r\n\r\nme\r\n")
	info, err := s.Put(body)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Path(info.Digest)
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("garbage"), 0o640); err != nil {
		t.Fatal(err)
	}
	again, err := s.Put(body)
	if err != nil || again.Created {
		t.Fatalf("Put over an existing file = %+v, %v", again, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "garbage" {
		t.Fatal("existing file was rewritten")
	}
	if _, err := s.Verify(info.Digest); !errors.Is(err, blob.ErrCorrupt) {
		t.Fatalf("Verify = %v, want ErrCorrupt", err)
	}
}

func TestFilesAreReadOnlyAndAtomic(t *testing.T) {
	s := open(t)
	info, err := s.Put([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.Path(info.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o440 {
		t.Fatalf("mode %v, want 0440", fi.Mode().Perm())
	}
	// A reader of the store never sees the temporary directory's files.
	if err := os.WriteFile(filepath.Join(s.Root(), "tmp", "put-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.Walk(context.Background(), func(d string, _ int64, err error) error {
		if err != nil {
			t.Errorf("Walk: %v", err)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("Walk saw %d files, want 1", n)
	}
}

// A byte flipped anywhere in a stored file is detected, by the file's
// name, whether it breaks the zstd frame or only the bytes it holds.
func TestCorruptionDetected(t *testing.T) {
	s := open(t)
	body := corpus(t)["binary attachment"]
	info, err := s.Put(body)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Path(info.Digest)
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{0, 5, len(orig) / 3, len(orig) / 2, len(orig) - 5, len(orig) - 1} {
		bad := bytes.Clone(orig)
		bad[at] ^= 0x01
		writeAs(t, p, bad)
		_, err := s.Verify(info.Digest)
		var ce *blob.CorruptError
		if !errors.As(err, &ce) || ce.Path != p || ce.Digest != info.Digest {
			t.Fatalf("flip at %d: Verify = %v, want a CorruptError naming %s", at, err, p)
		}
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not name the file", err)
		}
		// Reading it fails too, never silently returning other bytes.
		if _, err := s.Get(info.Digest); !errors.Is(err, blob.ErrCorrupt) {
			t.Fatalf("flip at %d: Get = %v", at, err)
		}
	}
	// A valid zstd frame of other bytes under the digest's name.
	enc, _ := zstd.NewWriter(nil)
	writeAs(t, p, enc.EncodeAll([]byte("other bytes"), nil))
	if _, err := s.Verify(info.Digest); !errors.Is(err, blob.ErrCorrupt) || !strings.Contains(err.Error(), "hash to") {
		t.Fatalf("substituted body: Verify = %v", err)
	}
	writeAs(t, p, orig)
	if _, err := s.Verify(info.Digest); err != nil {
		t.Fatalf("restored: %v", err)
	}
	os.Remove(p)
	if _, err := s.Verify(info.Digest); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing: Verify = %v", err)
	}
}

func TestInvalidDigests(t *testing.T) {
	s := open(t)
	for _, d := range []string{"", "abc", strings.Repeat("A", 64), strings.Repeat("0", 63) + "g", "../" + strings.Repeat("0", 61)} {
		if _, err := s.Get(d); err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want an invalid digest error", d, err)
		}
		if _, err := s.Has(d); err == nil {
			t.Errorf("Has(%q) accepted", d)
		}
	}
}

func TestStaleTempFilesCleaned(t *testing.T) {
	dir := t.TempDir()
	if _, err := blob.Open(dir); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "tmp", "put-old")
	fresh := filepath.Join(dir, "tmp", "put-fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := mustTime(t)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.Open(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("stale temporary file kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatal("a temporary file being written was removed")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, syscall.ECONNRESET }

func TestPutReaderFailureLeavesNothing(t *testing.T) {
	s := open(t)
	if _, err := s.PutReader(io.MultiReader(strings.NewReader("partial"), errReader{})); err == nil {
		t.Fatal("PutReader of a failing reader succeeded")
	}
	assertNoTemp(t, s)
	if n := countFiles(t, s); n != 0 {
		t.Fatalf("%d files after a failed write", n)
	}
}

func writeAs(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func countFiles(t *testing.T, s *blob.Store) int {
	t.Helper()
	n := 0
	if err := s.Walk(context.Background(), func(string, int64, error) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func assertNoTemp(t *testing.T, s *blob.Store) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("%d temporary files left", len(ents))
	}
}

func mustTime(t *testing.T) time.Time {
	t.Helper()
	return time.Now().Add(-2 * time.Hour)
}
