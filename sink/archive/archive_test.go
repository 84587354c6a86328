package archive_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/exportcheck"
	"github.com/bonnie-archive/bonnie/internal/testmail"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

const (
	fInbox = "inbox0000000000000000000a"
	fWork  = "work00000000000000000000b"
	fBob   = "bob000000000000000000000c"
)

// memFetcher serves bodies from memory into the store, like the IMAP
// fetcher would from Cyrus.
type memFetcher struct {
	store  *blob.Store
	bodies map[string][]byte // folder/uid
}

func (f *memFetcher) FetchBodies(_ context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	var refs []bonnie.BodyRef
	for _, uid := range ev.UIDs {
		b, ok := f.bodies[fmt.Sprintf("%s/%d", ev.MailboxID, uid)]
		if !ok {
			refs = append(refs, bonnie.BodyRef{UID: uid, Error: "UID not found (expunged?)"})
			continue
		}
		info, err := f.store.Put(b)
		if err != nil {
			return nil, err
		}
		refs = append(refs, bonnie.BodyRef{UID: uid, Digest: info.Digest, Size: info.Size, InternalDate: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)})
	}
	return refs, nil
}

type fixture struct {
	lg    *sqlite.Log
	store *blob.Store
	a     *archive.Archive
	msgs  map[string]testmail.Message
	dup   []byte // same Message-ID as the 8-bit one, other bytes
}

func ts(month, day int) string {
	return time.Date(2026, time.Month(month), day, 12, 0, 0, 0, time.UTC).Format("2006-01-02T15:04:05.000Z")
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	blobs, proj := archive.Paths(dir)
	store, err := blob.Open(blobs)
	if err != nil {
		t.Fatal(err)
	}
	msgs := map[string]testmail.Message{}
	for _, m := range testmail.Set("a", 300_000) {
		msgs[m.Name] = m
	}
	lmtp := testmail.LMTP("all")
	dup := append(bytes.Clone(msgs["8-bit"].Bytes), []byte("A second body with the same Message-ID.\r\n")...)
	f := &memFetcher{store: store, bodies: map[string][]byte{
		fInbox + "/1": msgs["8-bit"].Bytes,
		fWork + "/1":  msgs["binary attachment"].Bytes,
		fWork + "/2":  msgs["broken MIME"].Bytes,
		fBob + "/1":   lmtp,
		fInbox + "/2": lmtp,
		fInbox + "/4": dup,
		fInbox + "/5": msgs["large"].Bytes,
		// fInbox/3 is missing: expunged before it could be fetched.
	}}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Bodies: f})
	if err != nil {
		t.Fatal(err)
	}
	create := func(id, name string, m, d int) string {
		return fmt.Sprintf(`{"event":"MailboxCreate","timestamp":"%s","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7","user":"cyrus"}`, ts(m, d), id, name)
	}
	add := func(typ, id, name string, uid, m, d int) string {
		return fmt.Sprintf(`{"event":"%s","timestamp":"%s","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7/;UID=%d","user":"alice"}`, typ, ts(m, d), id, name, uid)
	}
	events := []string{
		create(fInbox, "user.alice", 1, 1),
		create(fWork, "user.alice.Work", 1, 1),
		create(fBob, "user.bob", 1, 1),
		add("MessageAppend", fInbox, "user.alice", 1, 1, 10),
		add("MessageAppend", fWork, "user.alice.Work", 1, 2, 10),
		add("MessageNew", fBob, "user.bob", 1, 2, 11),
		add("MessageNew", fInbox, "user.alice", 2, 2, 11),
		add("MessageAppend", fWork, "user.alice.Work", 2, 3, 10),
		add("MessageAppend", fInbox, "user.alice", 3, 3, 11),
		fmt.Sprintf(`{"event":"vnd.cmu.MessageCopy","timestamp":"%s","mailboxID":"%s","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","oldMailboxID":"imap://h/user.alice;UIDVALIDITY=7","uidset":"3","vnd.cmu.oldUidset":"1","user":"alice"}`, ts(4, 1), fWork),
		fmt.Sprintf(`{"event":"MailboxRename","timestamp":"%s","mailboxID":"%s","uri":"imap://h/user.alice.Archiv%%202027;UIDVALIDITY=7","oldMailboxID":"imap://h/user.alice.Work;UIDVALIDITY=7","user":"alice"}`, ts(5, 1), fWork),
		add("MessageAppend", fInbox, "user.alice", 4, 6, 1),
		add("MessageAppend", fInbox, "user.alice", 5, 6, 2),
	}
	for i, e := range events {
		if _, _, err := eng.Ingest(ctx, []byte(e), "test"); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	a, err := archive.Open(ctx, proj, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if _, err := a.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	msgs["lmtp"] = testmail.Message{Name: "lmtp", MessageID: "<lmtp-all@example.org>", Bytes: lmtp}
	return &fixture{lg: lg, store: store, a: a, msgs: msgs, dup: dup}
}

func digests(bs []archive.Body) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Digest)
	}
	slices.Sort(out)
	return out
}

func (f *fixture) want(names ...string) []string {
	var out []string
	for _, n := range names {
		if n == "dup" {
			out = append(out, blob.Digest(f.dup))
			continue
		}
		out = append(out, blob.Digest(f.msgs[n].Bytes))
	}
	slices.Sort(out)
	return out
}

func TestIndexAndFind(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	bodies, occ, err := f.a.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 6 distinct bodies; 8 places (the LMTP delivery twice, a copy).
	if bodies != 6 || occ != 8 {
		t.Fatalf("%d bodies, %d occurrences; want 6 and 8", bodies, occ)
	}
	for _, tc := range []struct {
		name string
		q    archive.Query
		want []string
	}{
		{"all of alice", archive.Query{Custodian: "alice"}, f.want("8-bit", "binary attachment", "broken MIME", "lmtp", "dup", "large")},
		{"bob", archive.Query{Custodian: "bob"}, f.want("lmtp")},
		{"February", archive.Query{Custodian: "alice", From: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}, f.want("binary attachment", "lmtp")},
		{"to is exclusive", archive.Query{Custodian: "alice", To: time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)}, nil},
		{"renamed folder by its new name", archive.Query{Custodian: "alice", Folders: []string{"user.alice.Archiv 2027"}}, f.want("binary attachment", "broken MIME", "8-bit")},
		{"by its old name", archive.Query{Custodian: "alice", Folders: []string{"user.alice.Work"}}, f.want("binary attachment", "broken MIME", "8-bit")},
		{"by uniqueid", archive.Query{Custodian: "alice", Folders: []string{fWork}}, f.want("binary attachment", "broken MIME", "8-bit")},
		{"copy arrived in April", archive.Query{Custodian: "alice", Folders: []string{fWork}, From: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)}, f.want("8-bit")},
	} {
		got, err := f.a.Find(ctx, tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(digests(got), tc.want) {
			t.Errorf("%s: got %d bodies %v, want %v", tc.name, len(got), digests(got), tc.want)
		}
	}
	if _, err := f.a.Find(ctx, archive.Query{Custodian: "alice", Folders: []string{"user.alice.Nope"}}); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("unknown folder: %v", err)
	}

	// The copy is an occurrence of the 8-bit body in the renamed folder,
	// named as it was then.
	b, err := f.a.Body(ctx, blob.Digest(f.msgs["8-bit"].Bytes))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Occurrences) != 2 || b.Occurrences[1].Event != "MessageCopy" || b.Occurrences[1].Path != "user.alice.Work" || b.Occurrences[1].Owner != "alice" {
		t.Fatalf("occurrences %+v", b.Occurrences)
	}
	if b.MessageID != f.msgs["8-bit"].MessageID || b.Size != int64(len(f.msgs["8-bit"].Bytes)) {
		t.Fatalf("body %+v", b)
	}

	// One Message-ID, two different bodies.
	for _, mid := range []string{f.msgs["8-bit"].MessageID, strings.Trim(f.msgs["8-bit"].MessageID, "<>")} {
		got, err := f.a.ByMessageID(ctx, mid)
		if err != nil || !slices.Equal(digests(got), f.want("8-bit", "dup")) {
			t.Fatalf("ByMessageID(%s) = %v, %v", mid, digests(got), err)
		}
	}
	// The broken message's Message-ID is read from its header all the same.
	if got, _ := f.a.ByMessageID(ctx, f.msgs["broken MIME"].MessageID); len(got) != 1 {
		t.Fatalf("broken MIME by Message-ID: %d", len(got))
	}

	missing, err := f.a.Missing(ctx)
	if err != nil || len(missing) != 1 || missing[0].UID != 3 || missing[0].Folder != fInbox || !strings.Contains(missing[0].Error, "expunged") {
		t.Fatalf("missing %+v %v", missing, err)
	}
}

// The projection is disposable: rebuilding it from the log, or handling
// every record again, gives the same answers.
func TestRebuildAndRehandle(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	before, _ := f.a.Find(ctx, archive.Query{Custodian: "alice"})
	recs, err := f.lg.Read(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if archive.Events.Has(r.Event.Type) {
			if err := f.a.Handle(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := f.a.Rebuild(ctx, f.lg); err != nil {
		t.Fatal(err)
	}
	after, _ := f.a.Find(ctx, archive.Query{Custodian: "alice"})
	if len(before) != len(after) {
		t.Fatalf("%d bodies before, %d after", len(before), len(after))
	}
	for i := range before {
		if before[i].Digest != after[i].Digest || len(before[i].Occurrences) != len(after[i].Occurrences) {
			t.Fatalf("body %d differs: %+v vs %+v", i, before[i], after[i])
		}
	}
	if b, o, _ := f.a.Count(ctx); b != 6 || o != 8 {
		t.Fatalf("after rehandling: %d bodies %d occurrences", b, o)
	}
}

func TestVerify(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rep, err := f.a.Verify(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Bodies != 6 || len(rep.Missing) != 1 || len(rep.Unreferenced) != 0 {
		t.Fatalf("clean store: %+v", rep)
	}
	// A flipped byte in one blob file is reported by that file's name.
	victim := blob.Digest(f.msgs["broken MIME"].Bytes)
	p := f.store.Path(victim)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x20
	os.Chmod(p, 0o640)
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
	// And another body is gone.
	gone := blob.Digest(f.msgs["lmtp"].Bytes)
	os.Remove(f.store.Path(gone))
	rep, err = f.a.Verify(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 2 {
		t.Fatalf("problems %+v", rep.Problems)
	}
	byKind := map[string]archive.Problem{}
	for _, pr := range rep.Problems {
		byKind[pr.Kind] = pr
	}
	if c := byKind[archive.ProblemCorrupt]; c.Path != p || c.Digest != victim {
		t.Fatalf("corrupt: %+v, want %s", c, p)
	}
	if m := byKind[archive.ProblemMissing]; m.Digest != gone {
		t.Fatalf("missing: %+v", m)
	}
}

func TestExportCheckedByRecipient(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	q := archive.Query{Custodian: "alice", From: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)}
	want := f.want("8-bit", "binary attachment", "broken MIME", "lmtp", "dup", "large")
	for _, format := range []archive.Format{archive.FormatEMLZip, archive.FormatMbox} {
		t.Run(string(format), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "export."+string(format))
			var calls int
			res, err := f.a.Export(ctx, archive.ExportRequest{Query: q, Format: format, Output: out, Log: f.lg,
				RunBy:    archive.RunBy{User: "auditor", Host: "h"},
				Progress: func(done, total int, _ int64) { calls++ }})
			if err != nil {
				t.Fatal(err)
			}
			if calls != len(want) {
				t.Fatalf("progress called %d times", calls)
			}
			var r *exportcheck.Result
			if format == archive.FormatMbox {
				r, err = exportcheck.Mbox(out)
			} else {
				r, err = exportcheck.Zip(out)
			}
			if err != nil {
				t.Fatalf("recipient's check: %v", err)
			}
			if r.ManifestSHA256 != res.ManifestSHA256 || r.Manifest.RunBy.User != "auditor" || r.Manifest.Format != archive.ManifestFormat {
				t.Fatalf("manifest %+v", r.Manifest)
			}
			var got []string
			for d, b := range r.Bodies {
				got = append(got, d)
				if blob.Digest(b) != d {
					t.Fatal("recovered bytes differ")
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("exported %v, want %v", got, want)
			}
			for _, m := range r.Manifest.Messages {
				if len(m.Occurrences) == 0 || m.Occurrences[0].Position == 0 {
					t.Fatalf("%s: no log positions", m.SHA256)
				}
			}
			// Nothing but the outputs is left in the directory.
			ents, _ := os.ReadDir(filepath.Dir(out))
			if len(ents) != len(res.Files) {
				t.Fatalf("%d files in the output directory, want %d", len(ents), len(res.Files))
			}
		})
	}
}

// A corrupt body fails the export, and an interrupted export leaves
// nothing behind.
func TestExportIsAtomic(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	out := filepath.Join(dir, "x.zip")
	p := f.store.Path(blob.Digest(f.msgs["large"].Bytes))
	b, _ := os.ReadFile(p)
	b[100] ^= 1
	os.Chmod(p, 0o640)
	os.WriteFile(p, b, 0o640)
	_, err := f.a.Export(ctx, archive.ExportRequest{Query: archive.Query{Custodian: "alice"}, Format: archive.FormatEMLZip, Output: out})
	if !errors.Is(err, blob.ErrCorrupt) || !strings.Contains(err.Error(), p) {
		t.Fatalf("export over a corrupt body: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	_, err = f.a.Export(cctx, archive.ExportRequest{Query: archive.Query{Custodian: "bob"}, Format: archive.FormatMbox, Output: filepath.Join(dir, "y.mbox"),
		Progress: func(int, int, int64) { cancel() }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted export: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}
