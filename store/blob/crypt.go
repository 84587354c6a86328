package blob

// Encryption at rest and crypto-shredding.
//
// With a site key (WithSiteKey), every new body is stored encrypted under a
// data key of its own, and the data key, wrapped by the site key, is kept
// apart from the body, in a small key file:
//
//	ROOT/ab/ab12….zenc                  the zstd stream of the body, encrypted (format below)
//	ROOT/keys/ab/ab12….KEYID.key        its data key, wrapped by the site key
//	ROOT/gone/ab/ab12…                  a tombstone: the body was erased or purged (JSON)
//
// The content address stays the SHA-256 of the plaintext, so dedup is
// unchanged: one delivery to 500 recipients is one encrypted file and one
// key. Erasure (Erase) writes a tombstone, overwrites and removes the key
// file and removes the encrypted file: the body is then unrecoverable from
// any copy of the body files (a backup, a replica) that does not also hold
// the key file. Keep the small keys/ directory on a shorter backup
// rotation than the bodies, or out of body backups, for erasure to reach
// them.
//
// Cipher: ChaCha20-Poly1305 (RFC 8439) from golang.org/x/crypto, the Go
// team's own package. It is constant-time in software on every CPU (AES-GCM
// is only on CPUs with AES instructions), and its extended-nonce variant
// XChaCha20-Poly1305 takes 192-bit random nonces, so one long-lived site key
// can wrap any number of data keys without a nonce counter (AES-GCM's
// 96-bit random nonces are limited to 2^32 uses of one key).
//
// An encrypted body file is "BNB1", a 16-byte key id (naming the key file),
// then the zstd stream cut into chunks of 64 KiB, each sealed with
// ChaCha20-Poly1305 under the data key with the nonce (chunk number, big
// endian, in 8 bytes; 3 zero bytes; 1 on the last chunk, else 0). The last
// chunk is shorter than 64 KiB (possibly empty), so a truncated, reordered
// or altered file fails to authenticate, and the SHA-256 of the plaintext
// is checked against the name as for plain files. A key file is "BNK1",
// the first 8 bytes of SHA-256(site key) (to tell a wrong site key from a
// damaged file), a 24-byte random nonce, and the 32-byte data key sealed
// with XChaCha20-Poly1305 under the site key, with the file's name
// (digest.keyid) as associated data, so that a key cannot be moved to
// another body.

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// EncSuffix is the file name suffix of an encrypted body.
const EncSuffix = ".zenc"

const (
	keysDir   = "keys"
	goneDir   = "gone"
	bodyMagic = "BNB1"
	keyMagic  = "BNK1"
	keyIDLen  = 16
	siteIDLen = 8
	chunkSize = 64 << 10
	tagSize   = chacha20poly1305.Overhead
)

// ErrNoSiteKey is returned when an encrypted body is read from a store
// opened without the site key.
var ErrNoSiteKey = errors.New("blob: the body is encrypted and no site key was given")

// ErrWrongSiteKey is returned when a data key was wrapped by another site
// key than the store's.
var ErrWrongSiteKey = errors.New("blob: the data key was wrapped by another site key")

// ErrErased and ErrPurged are wrapped by a *GoneError.
var (
	ErrErased = errors.New("blob: erased")
	ErrPurged = errors.New("blob: purged")
)

// Kinds of tombstone.
const (
	KindErased = "erased"
	KindPurged = "purged"
)

// Tombstone says why a body is gone. It is written by Erase and Purge and
// holds nothing of the body.
type Tombstone struct {
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	// Note is the caller's reference (the log event that ordered it).
	Note string `json:"note,omitempty"`
}

// GoneError is returned for a body that was erased or purged.
type GoneError struct {
	Digest string
	Tombstone
}

func (e *GoneError) Error() string {
	s := fmt.Sprintf("blob: %s was %s at %s", e.Digest, e.Kind, e.Time.UTC().Format(time.RFC3339))
	if e.Note != "" {
		s += " (" + e.Note + ")"
	}
	return s
}

// Unwrap returns ErrErased or ErrPurged.
func (e *GoneError) Unwrap() error {
	if e.Kind == KindPurged {
		return ErrPurged
	}
	return ErrErased
}

// SiteKey is the key that wraps every body's data key.
type SiteKey struct {
	aead cipher.AEAD
	id   [siteIDLen]byte
}

// NewSiteKey makes a SiteKey of 32 bytes.
func NewSiteKey(key []byte) (*SiteKey, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("blob: site key: %w", err)
	}
	k := &SiteKey{aead: aead}
	sum := sha256.Sum256(key)
	copy(k.id[:], sum[:])
	return k, nil
}

// ID names the key (the first 8 bytes of its SHA-256, in hex) without
// revealing it.
func (k *SiteKey) ID() string { return hex.EncodeToString(k.id[:]) }

// LoadKeyFile reads a site key file: 64 hex digits (32 bytes), as
// WriteKeyFile writes it. A file that other users may read is refused.
func LoadKeyFile(path string) (*SiteKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("blob: key file: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("blob: key file %s is accessible to other users (mode %v); chmod 0400 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("blob: key file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != chacha20poly1305.KeySize {
		return nil, fmt.Errorf("blob: key file %s does not hold 64 hex digits", path)
	}
	return NewSiteKey(key)
}

// WriteKeyFile makes a new random site key and writes it to path (which
// must not exist), readable by its owner only.
func WriteKeyFile(path string) (*SiteKey, error) {
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return nil, fmt.Errorf("blob: key file: %w", err)
	}
	if _, err := fmt.Fprintf(f, "%x\n", key); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("blob: key file: %w", err)
	}
	return NewSiteKey(key)
}

// WithSiteKey makes the store encrypt the bodies it writes (and read
// encrypted ones). Without it, new bodies are written as plain zstd files
// and encrypted ones cannot be read (ErrNoSiteKey).
func WithSiteKey(k *SiteKey) Option { return func(s *Store) { s.site = k } }

// Encrypting reports whether the store encrypts the bodies it writes.
func (s *Store) Encrypting() bool { return s.site != nil }

func (s *Store) encPath(d string) string { return filepath.Join(s.root, d[:2], d+EncSuffix) }

func (s *Store) keyPath(d, keyID string) string {
	return filepath.Join(s.root, keysDir, d[:2], d+"."+keyID+".key")
}

func (s *Store) gonePath(d string) string { return filepath.Join(s.root, goneDir, d[:2], d) }

// Encrypted reports whether the body with digest d is stored encrypted.
func (s *Store) Encrypted(d string) (bool, error) {
	if !ValidDigest(d) {
		return false, fmt.Errorf("blob: invalid digest %q", d)
	}
	return exists(s.encPath(d))
}

func exists(p string) (bool, error) {
	_, err := os.Lstat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("blob: %w", err)
}

// sealer encrypts a zstd stream into an encrypted body file.
type sealer struct {
	w     io.Writer
	aead  cipher.AEAD
	buf   []byte
	out   []byte
	n     uint64
	dek   []byte
	keyID string
	err   error
}

func (s *Store) newSealer(w io.Writer) (*sealer, error) {
	dek := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(dek); err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.New(dek)
	if err != nil {
		return nil, err
	}
	id := make([]byte, keyIDLen)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	z := &sealer{w: w, aead: aead, dek: dek, keyID: hex.EncodeToString(id), buf: make([]byte, 0, chunkSize)}
	if _, err := w.Write(append([]byte(bodyMagic), id...)); err != nil {
		return nil, err
	}
	return z, nil
}

func chunkNonce(n uint64, last bool) []byte {
	nonce := make([]byte, chacha20poly1305.NonceSize)
	binary.BigEndian.PutUint64(nonce, n)
	if last {
		nonce[len(nonce)-1] = 1
	}
	return nonce
}

func (z *sealer) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	total := len(p)
	for len(p) > 0 {
		if len(z.buf) == chunkSize {
			// A full chunk is sealed only once more data follows: the
			// last chunk is always shorter than chunkSize.
			if z.err = z.flush(false); z.err != nil {
				return 0, z.err
			}
		}
		k := min(chunkSize-len(z.buf), len(p))
		z.buf = append(z.buf, p[:k]...)
		p = p[k:]
	}
	return total, nil
}

func (z *sealer) flush(last bool) error {
	z.out = z.aead.Seal(z.out[:0], chunkNonce(z.n, last), z.buf, nil)
	z.n++
	z.buf = z.buf[:0]
	_, err := z.w.Write(z.out)
	return err
}

// Close seals the last chunk.
func (z *sealer) Close() error {
	if z.err != nil {
		return z.err
	}
	if len(z.buf) == chunkSize {
		if err := z.flush(false); err != nil {
			return err
		}
	}
	z.err = errors.New("blob: sealer closed")
	return z.flush(true)
}

// wrap seals the data key under the site key for body d.
func (s *Store) wrap(d, keyID string, dek []byte) ([]byte, error) {
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte(keyMagic), s.site.id[:]...)
	out = append(out, nonce...)
	return s.site.aead.Seal(out, nonce, dek, []byte(d+"."+keyID)), nil
}

// unwrap opens the key file of body d.
func (s *Store) unwrap(d, keyID string) ([]byte, error) {
	b, err := os.ReadFile(s.keyPath(d, keyID))
	if err != nil {
		return nil, err
	}
	p := s.keyPath(d, keyID)
	hdr := len(keyMagic) + siteIDLen + chacha20poly1305.NonceSizeX
	if len(b) != hdr+chacha20poly1305.KeySize+tagSize || string(b[:len(keyMagic)]) != keyMagic {
		return nil, &CorruptError{Digest: d, Path: p, Reason: "not a key file"}
	}
	if s.site == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoSiteKey, d)
	}
	if !bytes.Equal(b[len(keyMagic):len(keyMagic)+siteIDLen], s.site.id[:]) {
		return nil, fmt.Errorf("%w: %s is wrapped by site key %x, this is %s", ErrWrongSiteKey, p,
			b[len(keyMagic):len(keyMagic)+siteIDLen], s.site.ID())
	}
	nonce := b[len(keyMagic)+siteIDLen : hdr]
	dek, err := s.site.aead.Open(nil, nonce, b[hdr:], []byte(d+"."+keyID))
	if err != nil {
		return nil, &CorruptError{Digest: d, Path: p, Reason: "the data key does not authenticate (altered)"}
	}
	return dek, nil
}

// commitKey writes the wrapped data key of body d, synced, under its name
// (before the body file is moved to its name: a body file never exists
// without its key); the caller syncs the key's directory.
func (s *Store) commitKey(d string, z *sealer) (string, error) {
	wrapped, err := s.wrap(d, z.keyID, z.dek)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.root, keysDir, d[:2])
	if err := s.ensureDir(dir); err != nil {
		return "", err
	}
	p := s.keyPath(d, z.keyID)
	if err := writeFileSync(filepath.Join(s.tmp, "key-"+d+"."+z.keyID), p, wrapped); err != nil {
		return "", err
	}
	return p, nil // the caller syncs dir
}

// ensureDir creates dir (and its parents) once.
func (s *Store) ensureDir(dir string) error {
	s.shardsMu.Lock()
	defer s.shardsMu.Unlock()
	if s.shards[dir] {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("blob: sync: %w", err)
	}
	s.shards[dir] = true
	return nil
}

// writeFileSync writes b to tmp, syncs it and renames it to p.
func writeFileSync(tmp, p string, b []byte) error {
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o440)
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("blob: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("blob: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("blob: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("blob: %w", err)
	}
	return nil
}

// opener decrypts an encrypted body file chunk by chunk.
type opener struct {
	r      *bufio.Reader
	aead   cipher.AEAD
	digest string
	path   string
	in     []byte
	out    []byte
	n      uint64
	done   bool
	err    error
}

func (o *opener) Read(p []byte) (int, error) {
	for len(o.out) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			o.err = io.EOF
			return 0, io.EOF
		}
		k, err := io.ReadFull(o.r, o.in[:chunkSize+tagSize])
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			o.err = err
			return 0, err
		}
		last := k < chunkSize+tagSize
		if !last {
			if _, perr := o.r.Peek(1); perr == io.EOF {
				// A full chunk with nothing after it: the writer never
				// ends so, the file was cut.
				last = true
			}
		}
		if k < tagSize {
			o.err = &CorruptError{Digest: o.digest, Path: o.path, Reason: fmt.Sprintf("truncated after chunk %d", o.n)}
			return 0, o.err
		}
		plain, aerr := o.aead.Open(o.in[:0], chunkNonce(o.n, last), o.in[:k], nil)
		if aerr != nil {
			o.err = &CorruptError{Digest: o.digest, Path: o.path, Reason: fmt.Sprintf("chunk %d does not authenticate (altered, truncated or reordered)", o.n)}
			return 0, o.err
		}
		o.n++
		o.out = plain
		o.done = last
	}
	n := copy(p, o.out)
	o.out = o.out[n:]
	return n, nil
}

// openEncrypted returns a reader of the zstd stream of the encrypted body
// d in file f.
func (s *Store) openEncrypted(d string, f *os.File) (io.Reader, error) {
	p := f.Name()
	br := bufio.NewReaderSize(f, chunkSize+tagSize)
	hdr := make([]byte, len(bodyMagic)+keyIDLen)
	if _, err := io.ReadFull(br, hdr); err != nil || string(hdr[:len(bodyMagic)]) != bodyMagic {
		return nil, &CorruptError{Digest: d, Path: p, Reason: "not an encrypted body file"}
	}
	keyID := hex.EncodeToString(hdr[len(bodyMagic):])
	dek, err := s.unwrap(d, keyID)
	if errors.Is(err, fs.ErrNotExist) {
		if ts, terr := s.Gone(d); terr == nil && ts != nil {
			return nil, &GoneError{Digest: d, Tombstone: *ts}
		}
		return nil, &CorruptError{Digest: d, Path: p, Reason: "its data key " + s.keyPath(d, keyID) + " is missing"}
	}
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.New(dek)
	if err != nil {
		return nil, err
	}
	return &opener{r: br, aead: aead, digest: d, path: p, in: make([]byte, chunkSize+tagSize)}, nil
}

// Gone returns the tombstone of the body with digest d, or nil when it
// has none.
func (s *Store) Gone(d string) (*Tombstone, error) {
	if !ValidDigest(d) {
		return nil, fmt.Errorf("blob: invalid digest %q", d)
	}
	b, err := os.ReadFile(s.gonePath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	var t Tombstone
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, &CorruptError{Digest: d, Path: s.gonePath(d), Reason: "not a tombstone"}
	}
	return &t, nil
}

// Erase makes the body with digest d unrecoverable (GDPR): it writes a
// tombstone naming note, overwrites and removes its data keys, and removes
// the body file. A body stored before encryption was enabled (a plain zstd
// file) can only be deleted: copies of it elsewhere keep it. Erasing a
// body already gone changes nothing. Reads of d then fail with a
// *GoneError wrapping ErrErased, until the same bytes are Put again (a new
// delivery: stored anew, under a new data key).
func (s *Store) Erase(d, note string) error { return s.destroy(d, KindErased, note) }

// Purge removes the body with digest d as Erase does, its retention
// having expired; reads then fail with a *GoneError wrapping ErrPurged.
func (s *Store) Purge(d, note string) error { return s.destroy(d, KindPurged, note) }

func (s *Store) destroy(d, kind, note string) error {
	if !ValidDigest(d) {
		return fmt.Errorf("blob: invalid digest %q", d)
	}
	dir := filepath.Dir(s.gonePath(d))
	if err := s.ensureDir(dir); err != nil {
		return err
	}
	ts, err := json.Marshal(Tombstone{Kind: kind, Time: time.Now().UTC(), Note: note})
	if err != nil {
		return err
	}
	// The tombstone first: a crash after it leaves a body that says why
	// it is going, and a re-run finishes.
	if old, err := s.Gone(d); err != nil || old == nil || old.Kind != kind || old.Note != note {
		if err := writeFileSync(filepath.Join(s.tmp, "gone-"+d), s.gonePath(d), ts); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("blob: sync %s: %w", dir, err)
		}
	}
	keys, _ := filepath.Glob(filepath.Join(s.root, keysDir, d[:2], d+".*.key"))
	for _, k := range keys {
		if err := shred(k); err != nil {
			return err
		}
	}
	for _, p := range []string{s.encPath(d), s.Path(d)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("blob: %w", err)
		}
	}
	for _, dir := range []string{filepath.Join(s.root, keysDir, d[:2]), filepath.Join(s.root, d[:2])} {
		if err := syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("blob: sync %s: %w", dir, err)
		}
	}
	return nil
}

// shred overwrites a key file with zeros, syncs it and removes it. (On a
// copy-on-write or journaling file system the old blocks may survive the
// overwrite; the key is still wrapped by the site key.)
func shred(p string) error {
	if err := os.Chmod(p, 0o600); err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.WriteAt(make([]byte, fi.Size()), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blob: shred %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	return nil
}
