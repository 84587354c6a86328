package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/exportcheck"
	"github.com/bonnie-archive/bonnie/internal/testmail"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/source/cyrus"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// archiveEnv is a real Cyrus and, in this process, the engine reading its
// datagrams, fetching bodies over IMAP as the admin, and running the
// archive sink, on a data directory the command line then reads.
type archiveEnv struct {
	s    *cyrustest.Server
	data string
	lg   *sqlite.Log
}

func startArchiveEnv(t *testing.T) *archiveEnv {
	t.Helper()
	data := t.TempDir()
	sock := cyrustest.SocketPath(t, "notify")
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sub, err := cyrus.NewDatagramSubscriber(cyrus.Options{Path: sock, Source: "cyrus-datagram:" + sock, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s := cyrustest.Start(t, cyrustest.Options{
		Users:        map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"},
		NotifySocket: sock,
		// Keep raw 8-bit header bytes (Cyrus turns them into X by
		// default), so that what is appended is what is archived.
		Config: map[string]string{"munge8bit": "no"},
	})
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(data, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	blobs, proj := archive.Paths(data)
	store, err := blob.Open(blobs)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fetch.NewIMAP(fetch.IMAPOptions{Addr: s.IMAPAddr(), User: cyrustest.AdminUser, Password: cyrustest.AdminPassword, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	a, err := archive.Open(ctx, proj, store)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quiet, Bodies: f, BodyTimeout: 30 * time.Second,
		Sources: []bonnie.Source{{Name: "cyrus", Subscriber: sub}}, Sinks: []bonnie.Sink{a}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
		f.Close()
		a.Close()
		lg.Close()
	})
	return &archiveEnv{s: s, data: data, lg: lg}
}

// waitBodies waits until the log holds n events with fetched bodies and
// returns their BodyRefs.
func (e *archiveEnv) waitBodies(t *testing.T, n int) []bonnie.BodyRef {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		recs, err := e.lg.Read(context.Background(), 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		var refs []bonnie.BodyRef
		for _, r := range recs {
			refs = append(refs, r.Event.Bodies...)
		}
		if len(refs) >= n {
			return refs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bodies in the log after 60s, want %d", len(refs), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func appendAs(t *testing.T, c *imapclient.Client, mailbox string, b []byte) uint32 {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(b)), &imap.AppendOptions{Time: time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)})
	if _, err := cmd.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("APPEND %s: %v", mailbox, err)
	}
	return uint32(data.UID)
}

// peekSum is the SHA-256 of what the owner's session reads as BODY.PEEK[].
func peekSum(t *testing.T, c *imapclient.Client, mailbox string, uid uint32) string {
	t.Helper()
	if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	bufs, err := c.Fetch(imap.UIDSetNum(imap.UID(uid)), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(bufs) != 1 {
		t.Fatalf("BODY.PEEK[] %s %d: %v", mailbox, uid, err)
	}
	return hexSum(bufs[0].BodySection[0].Bytes)
}

func TestArchiveAgainstRealCyrus(t *testing.T) {
	e := startArchiveEnv(t)
	e.s.CreateMailbox(t, "user.alice.Archiv 2027")
	alice := e.s.Dial(t, "alice")
	start := time.Now().UTC().Add(-time.Second)

	type appended struct {
		m       testmail.Message
		mailbox string
		uid     uint32
	}
	var apps []appended
	for i, m := range testmail.Set("e2e", 2<<20) {
		mailbox := []string{"INBOX", "INBOX.Archiv 2027"}[i%2]
		apps = append(apps, appended{m, mailbox, appendAs(t, alice, mailbox, m.Bytes)})
	}
	lmtp := testmail.LMTP("e2e")
	e.s.LMTPDeliver(t, "news@example.org", []string{"alice", "bob", "carol"}, lmtp)
	refs := e.waitBodies(t, len(apps)+3)
	for _, r := range refs {
		if r.Error != "" {
			t.Fatalf("body not fetched: %+v", r)
		}
	}

	// Each body once: four appended, one delivered to three.
	store, _ := blob.Open(filepath.Join(e.data, "blobs"))
	files := 0
	store.Walk(context.Background(), func(string, int64, error) error { files++; return nil })
	if files != len(apps)+1 {
		t.Fatalf("%d files in the body store, want %d", files, len(apps)+1)
	}

	// archive get returns the appended bytes, which are what Cyrus serves
	// as BODY.PEEK[].
	for _, a := range apps {
		code, out, errs := bonnieCmd(t, nil, "--data", e.data, "archive", "get", a.m.MessageID)
		if code != 0 {
			t.Fatalf("archive get %s: exit %d: %s", a.m.Name, code, errs)
		}
		if !bytes.Equal([]byte(out), a.m.Bytes) {
			t.Fatalf("%s: archive get returned %d bytes, %d appended", a.m.Name, len(out), len(a.m.Bytes))
		}
		if want := peekSum(t, alice, a.mailbox, a.uid); hexSum([]byte(out)) != want {
			t.Fatalf("%s: SHA-256 %s, BODY.PEEK[] %s", a.m.Name, hexSum([]byte(out)), want)
		}
	}
	// The delivered message, by Message-ID, is one body; by its sha256
	// into a file.
	code, out, errs := bonnieCmd(t, nil, "--data", e.data, "archive", "get", "lmtp-e2e@example.org")
	if code != 0 {
		t.Fatalf("archive get of the delivery: %d %s", code, errs)
	}
	lmtpSum := peekSum(t, alice, "INBOX", 3)
	if hexSum([]byte(out)) != lmtpSum {
		t.Fatal("delivered message differs from BODY.PEEK[]")
	}
	outFile := filepath.Join(t.TempDir(), "m.eml")
	if code, _, errs := bonnieCmd(t, nil, "--data", e.data, "archive", "get", "-o", outFile, lmtpSum); code != 0 {
		t.Fatalf("archive get -o: %s", errs)
	}
	if b, _ := os.ReadFile(outFile); hexSum(b) != lmtpSum {
		t.Fatal("archive get -o wrote other bytes")
	}

	// A Message-ID naming two different bodies: listed, sha256 asked for.
	other := append(bytes.Clone(apps[0].m.Bytes), "Edited later.\r\n"...)
	appendAs(t, alice, "INBOX", other)
	e.waitBodies(t, len(apps)+4)
	code, out, errs = bonnieCmd(t, nil, "--data", e.data, "archive", "get", apps[0].m.MessageID)
	if code != 1 || out != "" || !strings.Contains(errs, hexSum(other)) || !strings.Contains(errs, hexSum(apps[0].m.Bytes)) || !strings.Contains(errs, "sha256") {
		t.Fatalf("ambiguous Message-ID: exit %d, stdout %d bytes, stderr:\n%s", code, len(out), errs)
	}

	// verify passes...
	code, out, errs = bonnieCmd(t, nil, "--data", e.data, "archive", "verify")
	if code != 0 || !strings.Contains(out, "ok: 6 bodies") {
		t.Fatalf("archive verify: exit %d\n%s%s", code, out, errs)
	}

	// ... exports check out without Bonnie ...
	end := time.Now().UTC().Add(time.Second)
	exp := t.TempDir()
	for _, tc := range []struct {
		format string
		folder []string
		want   []string
	}{
		{"eml-zip", nil, []string{hexSum(apps[0].m.Bytes), hexSum(apps[1].m.Bytes), hexSum(apps[2].m.Bytes), hexSum(apps[3].m.Bytes), lmtpSum, hexSum(other)}},
		{"mbox", nil, []string{hexSum(apps[0].m.Bytes), hexSum(apps[1].m.Bytes), hexSum(apps[2].m.Bytes), hexSum(apps[3].m.Bytes), lmtpSum, hexSum(other)}},
		{"mbox", []string{"--folder", "user.alice.Archiv 2027"}, []string{hexSum(apps[1].m.Bytes), hexSum(apps[3].m.Bytes)}},
	} {
		path := filepath.Join(exp, fmt.Sprintf("alice-%s-%d", tc.format, len(tc.folder)))
		args := append([]string{"--data", e.data, "export", "--custodian", "alice",
			"--from", start.Format(time.RFC3339), "--to", end.Format(time.RFC3339), "--format", tc.format, "-o", path}, tc.folder...)
		code, out, errs := bonnieCmd(t, nil, args...)
		if code != 0 {
			t.Fatalf("export %s: %d %s", tc.format, code, errs)
		}
		var r *exportcheck.Result
		var err error
		if tc.format == "mbox" {
			r, err = exportcheck.Mbox(path)
		} else {
			r, err = exportcheck.Zip(path)
		}
		if err != nil {
			t.Fatalf("recipient's check of the %s export: %v", tc.format, err)
		}
		if !strings.Contains(out, r.ManifestSHA256) {
			t.Fatalf("the command did not print the manifest's SHA-256: %s", out)
		}
		var got []string
		for d := range r.Bodies {
			got = append(got, d)
		}
		slices.Sort(got)
		slices.Sort(tc.want)
		if !slices.Equal(got, tc.want) {
			t.Fatalf("%s %v: exported %v, want %v", tc.format, tc.folder, got, tc.want)
		}
		for _, a := range apps {
			if b, ok := r.Bodies[hexSum(a.m.Bytes)]; ok && !bytes.Equal(b, a.m.Bytes) {
				t.Fatalf("%s: %s differs from what was appended", tc.format, a.m.Name)
			}
		}
	}

	// ... and a flipped byte in a blob file is reported by the file's name.
	victim := store.Path(hexSum(apps[2].m.Bytes))
	raw, _ := os.ReadFile(victim)
	bad := bytes.Clone(raw)
	bad[len(bad)/2] ^= 0x04
	os.Chmod(victim, 0o640)
	if err := os.WriteFile(victim, bad, 0o640); err != nil {
		t.Fatal(err)
	}
	code, out, errs = bonnieCmd(t, nil, "--data", e.data, "archive", "verify")
	if code != 1 || !strings.Contains(out, "CORRUPT "+victim) {
		t.Fatalf("verify after a flipped byte: exit %d\n%s%s", code, out, errs)
	}
	// get refuses it rather than write other bytes.
	code, out, _ = bonnieCmd(t, nil, "--data", e.data, "archive", "get", apps[2].m.MessageID)
	if code != 1 || out != "" {
		t.Fatalf("get of a corrupt body: exit %d, %d bytes written", code, len(out))
	}
	if err := os.WriteFile(victim, raw, 0o640); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := bonnieCmd(t, nil, "--data", e.data, "archive", "verify"); code != 0 {
		t.Fatalf("verify after repair: %s", out)
	}

	// The log's Message entities carry the digests.
	ids, err := e.lg.Find(context.Background(), bonnie.KindMessage, "digest", lmtpSum)
	if err != nil || len(ids) != 3 {
		t.Fatalf("messages with the delivered digest: %v %v", ids, err)
	}
}
