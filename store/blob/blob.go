// Package blob is Bonnie's content-addressed store of message bodies.
//
// Every body is kept once, under the SHA-256 of its exact bytes, compressed
// with zstd, in a file of its own that is written atomically and never
// overwritten:
//
//	ROOT/ab/ab12…(64 hex digits).zst   the body with SHA-256 ab12…, one zstd frame with its checksum
//	ROOT/ab/ab12….zenc                  the same, encrypted (WithSiteKey; crypt.go)
//	ROOT/keys/ab/ab12….KEYID.key        an encrypted body's data key, wrapped by the site key
//	ROOT/gone/ab/ab12…                  tombstone of an erased or purged body (Erase, Purge)
//	ROOT/tmp/                          files being written (ignored by readers, cleaned at Open)
//
// The same message delivered to 500 recipients is stored once: Put hashes
// the bytes first and writes nothing when the file exists. A file is
// written to ROOT/tmp, synced, and moved to its name with
// renameat2(RENAME_NOREPLACE) (a hard link where that is not supported),
// so a reader sees a complete file or none, a crash leaves only a
// temporary file behind, and an existing file is never replaced, not even
// by identical bytes. The directory is synced before Put returns: a body
// that Put reported is durable.
//
// Each file is a standard zstd frame: `zstd -d < FILE | sha256sum` prints
// the file's name, without Bonnie. Verify does the same (SHA-256 of the
// decompressed bytes against the name) and names the file that fails.
//
// The suffix of a file names its encoding: ".zst" for plain zstd, ".zenc"
// for a body encrypted under a data key of its own (WithSiteKey; see
// crypt.go for the format, key files and erasure). Both are found by the
// same digest, so a store holding both stays readable and dedup spans
// them: a body stored plain before encryption was enabled is not stored
// again.
//
// The backup sink shares this store: a body archived is a body backed up.
package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// maxWindow bounds the memory a (corrupt) frame header can make a reader
// allocate; the encoder's windows are far smaller.
const maxWindow = 128 << 20

// Suffix is the file name suffix of a zstd-compressed body.
const Suffix = ".zst"

// ErrNotFound is returned for a digest the store does not hold.
var ErrNotFound = errors.New("blob: not found")

// ErrCorrupt is wrapped by every *CorruptError.
var ErrCorrupt = errors.New("blob: corrupt")

// CorruptError names a stored body whose file does not hold the bytes its
// name promises.
type CorruptError struct {
	Digest string // the digest the file is named by
	Path   string // the file
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("blob: %s is corrupt: %s", e.Path, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Info describes a stored body.
type Info struct {
	// Digest is the lower-case hex SHA-256 of the body's bytes.
	Digest string
	// Size is the number of bytes of the body.
	Size int64
	// Created is true when this call wrote the file, false when the store
	// already held the body (nothing was written).
	Created bool
	// Stored is the size of the file (compressed) when this call wrote it,
	// 0 otherwise.
	Stored int64
}

// Store is a content-addressed body store in a directory. Its methods are
// safe for concurrent use, also by several processes sharing the directory.
type Store struct {
	root  string
	tmp   string
	level zstd.EncoderLevel
	site  *SiteKey // nil: bodies are written unencrypted

	encOnce sync.Once
	enc     *zstd.Encoder // EncodeAll is safe for concurrent use
	encErr  error
	streams sync.Pool // *zstd.Encoder for PutReader
	decs    sync.Pool // *zstd.Decoder
	bufs    sync.Pool // *[]byte compressed output of Put

	shardsMu sync.Mutex
	shards   map[string]bool // shard directories known to exist (and synced)
}

// Option configures Open.
type Option func(*Store)

// WithLevel sets the zstd level (default zstd.SpeedDefault, zstd's level 3).
func WithLevel(l zstd.EncoderLevel) Option { return func(s *Store) { s.level = l } }

// Open opens (creating it if needed) the store rooted at dir and removes
// temporary files left there by writers that died more than an hour ago.
func Open(dir string, opts ...Option) (*Store, error) {
	s := &Store{root: dir, tmp: filepath.Join(dir, "tmp"), level: zstd.SpeedDefault, shards: map[string]bool{}}
	for _, o := range opts {
		o(s)
	}
	if err := os.MkdirAll(s.tmp, 0o750); err != nil {
		return nil, fmt.Errorf("blob: open %s: %w", dir, err)
	}
	if ents, err := os.ReadDir(s.tmp); err == nil {
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
				_ = os.Remove(filepath.Join(s.tmp, e.Name()))
			}
		}
	}
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

// ValidDigest reports whether d is a digest as the store names them: 64
// lower-case hex digits.
func ValidDigest(d string) bool {
	if len(d) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Digest returns the digest of b as the store names it.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Path returns the file that holds the body with digest d: the encrypted
// file when there is one, else the plain one (which may not exist).
func (s *Store) Path(d string) string {
	if ok, _ := exists(s.encPath(d)); ok {
		return s.encPath(d)
	}
	return s.plainPath(d)
}

func (s *Store) plainPath(d string) string { return filepath.Join(s.root, d[:2], d+Suffix) }

// newPath is where a body written now goes.
func (s *Store) newPath(d string) string {
	if s.site != nil {
		return s.encPath(d)
	}
	return s.plainPath(d)
}

// Has reports whether the store holds a body with digest d, encrypted or
// not (without checking its bytes; see Verify). An erased or purged body
// is not held.
func (s *Store) Has(d string) (bool, error) {
	if !ValidDigest(d) {
		return false, fmt.Errorf("blob: invalid digest %q", d)
	}
	if ok, err := exists(s.encPath(d)); err != nil || ok {
		return ok, err
	}
	return exists(s.plainPath(d))
}

// encoderOptions: the level, the frame checksum, and entropy coding of
// blocks without matches. klauspost/compress stores such blocks raw by
// default; in mail they are mostly base64 attachments, which Huffman
// coding alone shrinks by a quarter (measured: 1.000 -> 0.754 of the raw
// size, as the zstd command line does).
func (s *Store) encoderOptions() []zstd.EOption {
	return []zstd.EOption{zstd.WithEncoderLevel(s.level), zstd.WithEncoderCRC(true), zstd.WithAllLitEntropyCompression(true)}
}

func (s *Store) encoder() (*zstd.Encoder, error) {
	s.encOnce.Do(func() {
		s.enc, s.encErr = zstd.NewWriter(nil, s.encoderOptions()...)
	})
	return s.enc, s.encErr
}

// Put stores b unless the store already holds it and returns its digest.
// When Put returns without error the body is durable.
func (s *Store) Put(b []byte) (Info, error) {
	d := Digest(b)
	info := Info{Digest: d, Size: int64(len(b))}
	if ok, err := s.Has(d); err != nil || ok {
		return info, err
	}
	enc, err := s.encoder()
	if err != nil {
		return info, fmt.Errorf("blob: zstd: %w", err)
	}
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer s.bufs.Put(bp)
	*bp = enc.EncodeAll(b, (*bp)[:0])
	f, err := s.tempFile()
	if err != nil {
		return info, err
	}
	cw := &countWriter{w: f}
	var w io.Writer = cw
	var z *sealer
	if s.site != nil {
		if z, err = s.newSealer(cw); err != nil {
			f.Close()
			os.Remove(f.Name())
			return info, fmt.Errorf("blob: encrypt: %w", err)
		}
		w = z
	}
	_, err = w.Write(*bp)
	if err == nil && z != nil {
		err = z.Close()
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return info, fmt.Errorf("blob: write %s: %w", f.Name(), err)
	}
	info.Created, err = s.commit(f, d, z)
	if info.Created {
		info.Stored = cw.n
	}
	return info, err
}

// PutReader stores the bytes read from r until EOF, streaming (for bodies
// too large to hold in memory), and returns their digest. The bytes are
// compressed to a temporary file while they are hashed; when the store
// already holds them the file is dropped.
func (s *Store) PutReader(r io.Reader) (Info, error) {
	f, err := s.tempFile()
	if err != nil {
		return Info{}, err
	}
	fail := func(err error) (Info, error) {
		f.Close()
		os.Remove(f.Name())
		return Info{}, err
	}
	enc, _ := s.streams.Get().(*zstd.Encoder)
	if enc == nil {
		if enc, err = zstd.NewWriter(nil, append(s.encoderOptions(), zstd.WithEncoderConcurrency(1))...); err != nil {
			return fail(fmt.Errorf("blob: zstd: %w", err))
		}
	}
	cw := &countWriter{w: f}
	var z *sealer
	if s.site != nil {
		if z, err = s.newSealer(cw); err != nil {
			s.streams.Put(enc)
			return fail(fmt.Errorf("blob: encrypt: %w", err))
		}
		enc.Reset(z)
	} else {
		enc.Reset(cw)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(h, enc), r)
	if err != nil {
		enc.Reset(nil)
		s.streams.Put(enc)
		return fail(fmt.Errorf("blob: read body: %w", err))
	}
	if err := enc.Close(); err != nil {
		return fail(fmt.Errorf("blob: compress: %w", err))
	}
	if z != nil {
		if err := z.Close(); err != nil {
			return fail(fmt.Errorf("blob: encrypt: %w", err))
		}
	}
	enc.Reset(nil)
	s.streams.Put(enc)
	d := hex.EncodeToString(h.Sum(nil))
	info := Info{Digest: d, Size: n}
	if ok, err := s.Has(d); err != nil || ok {
		f.Close()
		os.Remove(f.Name())
		return info, err
	}
	info.Created, err = s.commit(f, d, z)
	if info.Created {
		info.Stored = cw.n
	}
	return info, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (s *Store) tempFile() (*os.File, error) {
	f, err := os.CreateTemp(s.tmp, "put-*")
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return f, nil
}

// commit syncs and closes the temporary file f and moves it to the name
// of digest d without replacing anything there; an encrypted body's key
// (z) is written first. It reports whether it created the file (false:
// another writer stored the same body first).
func (s *Store) commit(f *os.File, d string, z *sealer) (bool, error) {
	tmp := f.Name()
	defer os.Remove(tmp) // gone after a rename; the leftover after a link or a failure
	// An encrypted body's key goes first (written, synced, renamed), so
	// that the body's own sync carries the key's directory entry on file
	// systems that commit metadata in order (ext4: the keys directory's
	// sync below then costs nothing); elsewhere that sync makes it durable.
	var key string
	if z != nil {
		var err error
		if key, err = s.commitKey(d, z); err != nil {
			f.Close()
			return false, err
		}
	}
	fail := func(err error) (bool, error) {
		if key != "" {
			os.Remove(key)
		}
		return false, err
	}
	if err := f.Chmod(0o440); err != nil {
		f.Close()
		return fail(fmt.Errorf("blob: %w", err))
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fail(fmt.Errorf("blob: sync %s: %w", tmp, err))
	}
	if err := f.Close(); err != nil {
		return fail(fmt.Errorf("blob: close %s: %w", tmp, err))
	}
	if key != "" {
		if err := syncDir(filepath.Dir(key)); err != nil {
			return fail(fmt.Errorf("blob: sync %s: %w", filepath.Dir(key), err))
		}
	}
	shard := filepath.Join(s.root, d[:2])
	if err := s.ensureShard(shard); err != nil {
		return fail(err)
	}
	final := s.newPath(d)
	created, err := renameNoReplace(tmp, final)
	if err != nil {
		return fail(fmt.Errorf("blob: store %s: %w", final, err))
	}
	if !created {
		return fail(nil) // the body stored first keeps its own key
	}
	if err := syncDir(shard); err != nil {
		return true, fmt.Errorf("blob: sync %s: %w", shard, err)
	}
	return true, nil
}

// ensureShard creates a shard directory once, syncing the root so that the
// directory entry is durable too.
func (s *Store) ensureShard(dir string) error {
	s.shardsMu.Lock()
	defer s.shardsMu.Unlock()
	if s.shards[dir] {
		return nil
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("blob: %w", err)
		}
		if err := syncDir(s.root); err != nil {
			return fmt.Errorf("blob: sync %s: %w", s.root, err)
		}
	} else if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	s.shards[dir] = true
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *Store) decoder(r io.Reader) (*zstd.Decoder, error) {
	dec, _ := s.decs.Get().(*zstd.Decoder)
	if dec == nil {
		var err error
		dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow))
		if err != nil {
			return nil, err
		}
	}
	if err := dec.Reset(r); err != nil {
		s.decs.Put(dec)
		return nil, err
	}
	return dec, nil
}

// Open returns a reader of the exact bytes of the body with digest d. The
// reader checks them as they are read: instead of io.EOF it returns a
// *CorruptError when the file cannot be decrypted (altered) or
// decompressed or the bytes do not hash to d. An erased or purged body is
// a *GoneError, a missing one ErrNotFound; an encrypted body needs the
// site key (ErrNoSiteKey, ErrWrongSiteKey).
func (s *Store) Open(d string) (io.ReadCloser, error) {
	if !ValidDigest(d) {
		return nil, fmt.Errorf("blob: invalid digest %q", d)
	}
	p := s.Path(d)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		if ts, gerr := s.Gone(d); gerr == nil && ts != nil {
			return nil, &GoneError{Digest: d, Tombstone: *ts}
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	var src io.Reader = f
	if strings.HasSuffix(p, EncSuffix) {
		if src, err = s.openEncrypted(d, f); err != nil {
			f.Close()
			return nil, err
		}
	}
	dec, err := s.decoder(src)
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			f.Close()
			return nil, err
		}
		f.Close()
		return nil, &CorruptError{Digest: d, Path: p, Reason: "not a zstd stream: " + err.Error()}
	}
	return &reader{s: s, f: f, dec: dec, h: sha256.New(), digest: d, path: p}, nil
}

type reader struct {
	s      *Store
	f      *os.File
	dec    *zstd.Decoder
	h      hash.Hash
	digest string
	path   string
	n      int64
	err    error
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.dec.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	switch {
	case err == io.EOF:
		if got := hex.EncodeToString(r.h.Sum(nil)); got != r.digest {
			r.err = &CorruptError{Digest: r.digest, Path: r.path,
				Reason: fmt.Sprintf("its %d bytes hash to %s", r.n, got)}
		} else {
			r.err = io.EOF
		}
	case err != nil:
		var ce *CorruptError
		if errors.As(err, &ce) {
			r.err = ce
		} else {
			r.err = &CorruptError{Digest: r.digest, Path: r.path, Reason: "cannot decompress: " + err.Error()}
		}
	}
	return n, r.err
}

func (r *reader) Close() error {
	if r.dec != nil {
		if r.dec.Reset(nil) == nil { // drops the file, keeps the buffers
			r.s.decs.Put(r.dec)
		}
		r.dec = nil
	}
	return r.f.Close()
}

// Get returns the exact bytes of the body with digest d, checked.
func (s *Store) Get(d string) ([]byte, error) {
	r, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// Verify reads the body with digest d, decompressing and hashing it, and
// returns its size; a file that does not hold what its name promises is a
// *CorruptError naming the file, a missing one ErrNotFound.
func (s *Store) Verify(d string) (int64, error) {
	r, err := s.Open(d)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return io.Copy(io.Discard, r)
}

// Walk calls fn for every body file in the store, in digest order, with
// its digest and the file's (compressed) size. Files whose names are not
// digests are reported as a *CorruptError with an empty Digest.
func (s *Store) Walk(ctx context.Context, fn func(digest string, stored int64, err error) error) error {
	shards, err := os.ReadDir(s.root)
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	for _, sh := range shards {
		if !sh.IsDir() || len(sh.Name()) != 2 || !ValidDigest(sh.Name()+strings.Repeat("0", 62)) {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.root, sh.Name()))
		if err != nil {
			return fmt.Errorf("blob: %w", err)
		}
		for _, f := range files {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := filepath.Join(s.root, sh.Name(), f.Name())
			d, ok := strings.CutSuffix(f.Name(), Suffix)
			if !ok {
				d, ok = strings.CutSuffix(f.Name(), EncSuffix)
			}
			if !ok || !ValidDigest(d) || d[:2] != sh.Name() {
				if err := fn("", 0, &CorruptError{Path: p, Reason: "not a body file name"}); err != nil {
					return err
				}
				continue
			}
			var size int64
			if fi, err := f.Info(); err == nil {
				size = fi.Size()
			}
			if err := fn(d, size, nil); err != nil {
				return err
			}
		}
	}
	return nil
}
