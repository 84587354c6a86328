package archive

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
)

// Format is the container of an export.
type Format string

// Export formats.
const (
	// FormatMbox is one mbox file (mboxrd quoting), with the manifest
	// beside it (OUT.manifest.json and OUT.manifest.json.sha256).
	FormatMbox Format = "mbox"
	// FormatEMLZip is a zip of one NAME.eml per message, NAME its SHA-256,
	// holding the exact bytes, with manifest.json and
	// manifest.json.sha256 inside.
	FormatEMLZip Format = "eml-zip"
)

// ManifestFormat names the manifest's layout.
const ManifestFormat = "bonnie-export/1"

// RunBy says who made an export.
type RunBy struct {
	User    string `json:"user"`
	UID     string `json:"uid,omitempty"`
	Host    string `json:"host,omitempty"`
	Command string `json:"command,omitempty"`
}

// ExportRequest describes an export.
type ExportRequest struct {
	Query  Query
	Format Format
	// Output is the file to write (the zip, or the mbox). It is written
	// atomically: to a temporary file beside it, renamed when complete.
	Output string
	RunBy  RunBy
	// Log, when set, has its head position and hash recorded in the
	// manifest: the state of the evidence the export was drawn from.
	// When it is also a coverage.Source (the stores are), the manifest
	// says how each message was recorded and which gaps in the log's
	// coverage the export crosses (Manifest.Gaps).
	Log bonnie.Log
	// Progress, when set, is called after each message.
	Progress func(done, total int, bytes int64)
}

// LogState is the log's head when an export was made.
type LogState struct {
	Head     bonnie.Position `json:"head"`
	HeadHash string          `json:"headHash"`
}

// ManifestMessage is one message of an export.
type ManifestMessage struct {
	SHA256       string    `json:"sha256"`
	Size         int64     `json:"size"`
	MessageID    string    `json:"messageId,omitempty"`
	InternalDate time.Time `json:"internalDate,omitzero"`
	// File is the zip entry holding the message (eml-zip).
	File string `json:"file,omitempty"`
	// MboxOffset and MboxLength locate the message's entry in the mbox
	// file (its "From " line to its closing line feed included).
	MboxOffset *int64 `json:"mboxOffset,omitempty"`
	MboxLength *int64 `json:"mboxLength,omitempty"`
	// Occurrences are where and when the message arrived in the
	// custodian's folders, with the log positions of those events.
	Occurrences []Occurrence `json:"occurrences"`
	// RecordedBy is "live" when every occurrence was notified by Cyrus
	// as it happened; otherwise how the first occurrence recorded after
	// the fact came into the log: "backfill" (found present by a crawl
	// at RecordedAt; it arrived before) or "reconcile" (found missing at
	// RecordedAt; it arrived within Window). Empty when the export was
	// made without the log.
	RecordedBy string         `json:"recordedBy,omitempty"`
	RecordedAt time.Time      `json:"recordedAt,omitzero"`
	Window     *bonnie.Window `json:"window,omitempty"`
}

// ManifestFile is a file of the export other than the manifest.
type ManifestFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Manifest describes an export so that its recipient can check it without
// Bonnie: the SHA-256 and size of each message's original bytes, and how
// to get those bytes back from the container.
type Manifest struct {
	Format    string    `json:"format"`
	Container Format    `json:"container"`
	Query     Query     `json:"query"`
	RunBy     RunBy     `json:"runBy"`
	CreatedAt time.Time `json:"createdAt"`
	Log       *LogState `json:"log,omitempty"`
	Hash      string    `json:"hashAlgorithm"`
	// HowToCheck says in words how the hashes relate to the files.
	HowToCheck string            `json:"howToCheck"`
	Messages   []ManifestMessage `json:"messages"`
	// Gone are the bodies the query selects that the log erased or
	// purged (an Erasure or Purge event): not in the export, named so
	// that their absence is explained.
	Gone []GoneBody `json:"gone,omitempty"`
	// Gaps are, per folder of the export (those the query names and
	// those its messages arrived in), the periods within the query's
	// time span (From to To, or to CreatedAt) in which the log is not
	// known complete: nobody listened (gap), a reconcile found the folder
	// unchanged since (verified) or recorded what was missed (repaired,
	// with Repairs), or the log did not know the folder yet (unknown,
	// backfilled). Empty when the export crosses none, or was made
	// without the log.
	Gaps  []coverage.Crossing `json:"gaps,omitempty"`
	Count int                 `json:"count"`
	Bytes int64               `json:"bytes"`
	Files []ManifestFile      `json:"files,omitempty"`
}

const (
	howZip = "Each message is the zip entry named by the SHA-256 of its bytes plus \".eml\", holding the message's original bytes " +
		"exactly as the mail server stored them; sha256 and size are of those bytes. manifest.json.sha256 holds the SHA-256 of manifest.json."
	howMbox = "mboxrd: each message is preceded by a line \"From MAILER-DAEMON <date>\\n\" and followed by one \"\\n\"; inside it, every line " +
		"that starts with zero or more '>' followed by \"From \" got one more '>'. sha256 and size are of the ORIGINAL bytes, not of the " +
		"mbox entry: take the mboxLength bytes at mboxOffset, drop the first line and the last byte, remove one '>' from each line " +
		"matching ^>+From , and hash. files[] gives the SHA-256 of the mbox file itself; the .sha256 file beside the manifest holds the SHA-256 of the manifest."
)

// ExportResult is what Export wrote.
type ExportResult struct {
	Manifest       *Manifest
	ManifestSHA256 string
	// Files are the files written, the container first.
	Files []string
}

// Export writes the bodies the query selects, each checked against its
// SHA-256 as it is read from the store (a corrupt body fails the export,
// naming the file: an export never carries other bytes than the log's),
// with a manifest. The output appears complete or not at all: everything
// is written to temporary files that are synced and renamed at the end,
// the manifest last; an interrupted export (ctx) leaves nothing behind.
// It is not resumable: run it again.
func (a *Archive) Export(ctx context.Context, req ExportRequest) (*ExportResult, error) {
	if req.Format != FormatMbox && req.Format != FormatEMLZip {
		return nil, fmt.Errorf("archive: unknown export format %q (mbox, eml-zip)", req.Format)
	}
	if req.Output == "" {
		return nil, errors.New("archive: export needs an output file")
	}
	found, err := a.Find(ctx, req.Query)
	if err != nil {
		return nil, err
	}
	m := &Manifest{Format: ManifestFormat, Container: req.Format, Query: req.Query, RunBy: req.RunBy,
		CreatedAt: time.Now().UTC(), Hash: "SHA-256", Messages: []ManifestMessage{}}
	var bodies []Body
	for _, b := range found {
		g, err := a.Gone(ctx, b.Digest)
		if err != nil {
			return nil, err
		}
		if g != nil {
			m.Gone = append(m.Gone, *g)
			continue
		}
		bodies = append(bodies, b)
	}
	w := &exportWriter{ctx: ctx, a: a, req: req, m: m, total: len(bodies)}
	if req.Log != nil {
		if st, err := logState(ctx, req.Log); err == nil {
			m.Log = st
		} else {
			return nil, err
		}
		if src, ok := req.Log.(coverage.Source); ok {
			if w.tl, err = exportCoverage(ctx, src, m, bodies); err != nil {
				return nil, err
			}
		}
	}
	defer w.cleanup()
	if req.Format == FormatEMLZip {
		m.HowToCheck = howZip
		err = w.zip(bodies)
	} else {
		m.HowToCheck = howMbox
		err = w.mbox(bodies)
	}
	if err != nil {
		return nil, err
	}
	return w.result, nil
}

func logState(ctx context.Context, lg bonnie.Log) (*LogState, error) {
	head, err := lg.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("archive: log head: %w", err)
	}
	st := &LogState{Head: head}
	if head > 0 {
		recs, err := lg.Read(ctx, head-1, 1)
		if err != nil || len(recs) == 0 {
			return nil, fmt.Errorf("archive: read log head: %v", err)
		}
		st.HeadHash = hex.EncodeToString(recs[0].Hash)
	}
	return st, nil
}

type exportWriter struct {
	ctx    context.Context
	a      *Archive
	req    ExportRequest
	m      *Manifest
	total  int
	done   int
	bytes  int64
	temps  []string
	result *ExportResult
	tl     *coverage.Timeline // marks each message's recording, when the log was given
}

// temp creates a temporary file beside path.
func (w *exportWriter) temp(path string) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("archive: export: %w", err)
	}
	w.temps = append(w.temps, f.Name())
	return f, nil
}

func (w *exportWriter) cleanup() {
	for _, t := range w.temps {
		os.Remove(t)
	}
}

func (w *exportWriter) progress(size int64) {
	w.done++
	w.bytes += size
	if w.req.Progress != nil {
		w.req.Progress(w.done, w.total, w.bytes)
	}
}

// copyBody writes the exact bytes of b to dst, checking them against the
// digest and size the log gives.
func (w *exportWriter) copyBody(dst io.Writer, b Body) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	r, err := w.a.blobs.Open(b.Digest)
	if err != nil {
		return fmt.Errorf("archive: export %s: %w", b.Digest, err)
	}
	defer r.Close()
	n, err := io.Copy(dst, r) // the store's reader fails on bytes that do not hash to the digest
	if err != nil {
		return fmt.Errorf("archive: export %s: %w", b.Digest, err)
	}
	if b.Size != 0 && n != b.Size {
		return fmt.Errorf("archive: export %s: %d bytes, the log says %d", b.Digest, n, b.Size)
	}
	return nil
}

func (w *exportWriter) entry(b Body) ManifestMessage {
	me := ManifestMessage{SHA256: b.Digest, Size: b.Size, MessageID: b.MessageID, InternalDate: b.InternalDate, Occurrences: b.Occurrences}
	if w.tl != nil {
		mk := recordedBy(w.tl, b.Occurrences)
		me.RecordedBy, me.RecordedAt, me.Window = mk.RecordedBy, mk.At, mk.Window
	}
	return me
}

func (w *exportWriter) zip(bodies []Body) error {
	f, err := w.temp(w.req.Output)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw := zip.NewWriter(bw)
	for _, b := range bodies {
		name := b.Digest + ".eml"
		hdr := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: modTime(b)}
		dst, err := zw.CreateHeader(hdr)
		if err != nil {
			return fmt.Errorf("archive: export: %w", err)
		}
		if err := w.copyBody(dst, b); err != nil {
			return err
		}
		me := w.entry(b)
		me.File = name
		w.m.Messages = append(w.m.Messages, me)
		w.m.Count++
		w.m.Bytes += b.Size
		w.progress(b.Size)
	}
	js, sum, err := encodeManifest(w.m)
	if err != nil {
		return err
	}
	for _, e := range []struct {
		name string
		data []byte
	}{{"manifest.json", js}, {"manifest.json.sha256", []byte(sum + "  manifest.json\n")}} {
		dst, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: w.m.CreatedAt})
		if err != nil {
			return fmt.Errorf("archive: export: %w", err)
		}
		if _, err := dst.Write(e.data); err != nil {
			return fmt.Errorf("archive: export: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("archive: export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("archive: export: %w", err)
	}
	if err := syncFile(f); err != nil {
		return err
	}
	if err := w.commit(f.Name(), w.req.Output); err != nil {
		return err
	}
	w.result = &ExportResult{Manifest: w.m, ManifestSHA256: sum, Files: []string{w.req.Output}}
	return nil
}

func modTime(b Body) time.Time {
	if !b.InternalDate.IsZero() {
		return b.InternalDate
	}
	if len(b.Occurrences) > 0 {
		return b.Occurrences[0].Time
	}
	return time.Now()
}

func (w *exportWriter) mbox(bodies []Body) error {
	f, err := w.temp(w.req.Output)
	if err != nil {
		return err
	}
	defer f.Close()
	fileHash := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, fileHash)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	for _, b := range bodies {
		start := cw.n + int64(bw.Buffered())
		fmt.Fprintf(bw, "From MAILER-DAEMON %s\n", modTime(b).UTC().Format("Mon Jan _2 15:04:05 2006"))
		q := &mboxrdWriter{w: bw, atStart: true}
		if err := w.copyBody(q, b); err != nil {
			return err
		}
		if err := q.Close(); err != nil {
			return fmt.Errorf("archive: export: %w", err)
		}
		if err := bw.WriteByte('\n'); err != nil {
			return fmt.Errorf("archive: export: %w", err)
		}
		end := cw.n + int64(bw.Buffered())
		me := w.entry(b)
		length := end - start
		me.MboxOffset, me.MboxLength = &start, &length
		w.m.Messages = append(w.m.Messages, me)
		w.m.Count++
		w.m.Bytes += b.Size
		w.progress(b.Size)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("archive: export: %w", err)
	}
	if err := syncFile(f); err != nil {
		return err
	}
	w.m.Files = []ManifestFile{{Name: filepath.Base(w.req.Output), SHA256: hex.EncodeToString(fileHash.Sum(nil)), Size: cw.n}}
	js, sum, err := encodeManifest(w.m)
	if err != nil {
		return err
	}
	manPath := w.req.Output + ".manifest.json"
	sumPath := manPath + ".sha256"
	mf, err := w.writeTemp(manPath, js)
	if err != nil {
		return err
	}
	sf, err := w.writeTemp(sumPath, []byte(sum+"  "+filepath.Base(manPath)+"\n"))
	if err != nil {
		return err
	}
	// The container first, the manifest (the seal) last.
	for _, mv := range [][2]string{{f.Name(), w.req.Output}, {mf, manPath}, {sf, sumPath}} {
		if err := w.commit(mv[0], mv[1]); err != nil {
			return err
		}
	}
	w.result = &ExportResult{Manifest: w.m, ManifestSHA256: sum, Files: []string{w.req.Output, manPath, sumPath}}
	return nil
}

func (w *exportWriter) writeTemp(path string, data []byte) (string, error) {
	f, err := w.temp(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return "", fmt.Errorf("archive: export: %w", err)
	}
	return f.Name(), syncFile(f)
}

func (w *exportWriter) commit(tmp, final string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o640); err != nil {
		return fmt.Errorf("archive: export: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("archive: export: %w", err)
	}
	if d, err := os.Open(filepath.Dir(final)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func syncFile(f *os.File) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("archive: export: sync %s: %w", f.Name(), err)
	}
	return nil
}

// encodeManifest returns the manifest's JSON and its SHA-256.
func encodeManifest(m *Manifest) ([]byte, string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, "", fmt.Errorf("archive: manifest: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:]), nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// mboxrdWriter quotes "From " lines the mboxrd way: a line that starts
// with zero or more '>' and then "From " gets one more '>' in front.
// Lines are split on LF only; CR bytes are kept as they are.
type mboxrdWriter struct {
	w       *bufio.Writer
	atStart bool
	pending []byte // the start of a line that may yet become a From line
}

var fromPrefix = []byte("From ")

func (q *mboxrdWriter) Write(p []byte) (int, error) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if q.atStart || q.pending != nil {
			q.pending = append(q.pending, c)
			if q.decide() {
				continue
			}
			q.atStart = false
			if err := q.flushPending(); err != nil {
				return i, err
			}
			if c == '\n' {
				q.atStart = true
			}
			continue
		}
		// Copy up to and including the next line feed at once.
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			if _, err := q.w.Write(p[i:]); err != nil {
				return i, err
			}
			return len(p), nil
		}
		if _, err := q.w.Write(p[i : i+j+1]); err != nil {
			return i, err
		}
		i += j
		q.atStart = true
	}
	return len(p), nil
}

// decide reports whether pending may still become a From line (keep
// buffering); when it is one, it writes the extra '>' first.
func (q *mboxrdWriter) decide() bool {
	p := q.pending
	k := 0
	for k < len(p) && p[k] == '>' {
		k++
	}
	rest := p[k:]
	if len(rest) < len(fromPrefix) {
		return bytes.HasPrefix(fromPrefix, rest) && (len(rest) == 0 || rest[len(rest)-1] != '\n')
	}
	if bytes.Equal(rest[:len(fromPrefix)], fromPrefix) {
		q.w.WriteByte('>')
	}
	return false
}

func (q *mboxrdWriter) flushPending() error {
	_, err := q.w.Write(q.pending)
	q.pending = nil
	return err
}

// Close writes what is still pending (a last line too short to tell).
func (q *mboxrdWriter) Close() error {
	if q.pending != nil {
		return q.flushPending()
	}
	return nil
}
