package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// folderBodies serves bodies by "folder/uid" into the store.
type folderBodies struct {
	store  *blob.Store
	bodies map[string][]byte
}

func (f folderBodies) FetchBodies(_ context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	var refs []bonnie.BodyRef
	for _, uid := range ev.UIDs {
		info, err := f.store.Put(f.bodies[fmt.Sprintf("%s/%d", ev.MailboxID, uid)])
		if err != nil {
			return nil, err
		}
		refs = append(refs, bonnie.BodyRef{UID: uid, Digest: info.Digest, Size: info.Size})
	}
	return refs, nil
}

// governedArchive is a data directory with an encrypted body store:
// "shared" (alice and bob, 2020), "mine" (alice, 2020), "work" (alice's
// Work folder, 2020), "bobnew" and "alicenew" (2026-11).
func governedArchive(t *testing.T) (data, key string, bodies map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	data = t.TempDir()
	key = filepath.Join(t.TempDir(), "site.key")
	if rc, out, errb := bonnieCmd(t, nil, "archive", "keygen", key); rc != 0 || !strings.Contains(out, "wrote site key") {
		t.Fatalf("keygen: %d %s %s", rc, out, errb)
	}
	k, err := blob.LoadKeyFile(key)
	if err != nil {
		t.Fatal(err)
	}
	blobs, _ := archive.Paths(data)
	store, err := blob.Open(blobs, blob.WithSiteKey(k))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := sqlite.Open(ctx, filepath.Join(data, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	bodies = map[string][]byte{}
	for _, n := range []string{"shared", "mine", "work", "bobnew", "alicenew"} {
		bodies[n] = fmt.Appendf(nil, "Message-ID: <%s@example.org>\r\nSubject: %s\r\n\r\nThe %s message.\r\n", n, n, n)
	}
	f := folderBodies{store: store, bodies: map[string][]byte{
		"fA/1": bodies["shared"], "fB/1": bodies["shared"], "fA/2": bodies["mine"], "fW/1": bodies["work"],
		"fB/2": bodies["bobnew"], "fA/3": bodies["alicenew"],
	}}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Bodies: f, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	create := func(id, name string) string {
		return fmt.Sprintf(`{"event":"MailboxCreate","timestamp":"2020-01-01T00:00:00Z","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7","user":"cyrus"}`, id, name)
	}
	add := func(id, name string, uid int, at string) string {
		return fmt.Sprintf(`{"event":"MessageNew","timestamp":"%s","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7/;UID=%d","user":"cyrus"}`, at, id, name, uid)
	}
	for _, e := range []string{
		create("fA", "user.alice"), create("fB", "user.bob"), create("fW", "user.alice.Work"),
		add("fA", "user.alice", 1, "2020-01-10T00:00:00Z"), add("fB", "user.bob", 1, "2020-01-10T00:00:00Z"),
		add("fA", "user.alice", 2, "2020-01-11T00:00:00Z"), add("fW", "user.alice.Work", 1, "2020-02-01T00:00:00Z"),
		add("fB", "user.bob", 2, "2026-11-01T00:00:00Z"), add("fA", "user.alice", 3, "2026-11-02T00:00:00Z"),
	} {
		if _, _, err := eng.Ingest(ctx, []byte(e), "test"); err != nil {
			t.Fatal(err)
		}
	}
	return data, key, bodies
}

func TestArchiveGovernanceCommands(t *testing.T) {
	data, key, bodies := governedArchive(t)
	// Every command reads the key (the index reads Message-IDs from the
	// bodies); --key-file overrides it.
	t.Setenv(keyFileEnv, key)
	sum := func(n string) string { return blob.Digest(bodies[n]) }
	cmd := func(args ...string) (int, string, string) {
		t.Helper()
		return bonnieCmd(t, nil, append([]string{"--data", data}, args...)...)
	}
	must := func(args ...string) string {
		t.Helper()
		rc, out, errb := cmd(args...)
		if rc != 0 {
			t.Fatalf("%v: rc %d\n%s\n%s", args, rc, out, errb)
		}
		return out
	}
	get := func(n string) (int, string, string) {
		t.Helper()
		return cmd("archive", "--key-file", key, "get", sum(n))
	}
	now := "--now=2026-11-29"

	// Policies and holds, listed as JSON with who set them.
	must("archive", "retention", "set", "all-1y", "--keep", "1y", "--actor", "dpo", "--note", "records schedule 4.2")
	must("archive", "retention", "set", "tmp", "--keep", "1d", "--owner", "nobody", "--actor", "dpo")
	must("archive", "retention", "remove", "tmp", "--actor", "dpo")
	// Removing or releasing what is not there is an error, not an event.
	for _, args := range [][]string{{"archive", "retention", "remove", "tmp"}, {"archive", "hold", "release", "no-such-hold"}} {
		if rc, _, errb := cmd(append(args, "--actor", "dpo")...); rc == 0 || !strings.Contains(errb, "no ") {
			t.Errorf("%v: rc %d, %q", args, rc, errb)
		}
	}
	var ps []archive.Policy
	if err := json.Unmarshal([]byte(must("archive", "retention", "list", "--json")), &ps); err != nil || len(ps) != 1 || ps[0].ID != "all-1y" || ps[0].Actor != "dpo" {
		t.Fatalf("policies %+v %v", ps, err)
	}
	must("archive", "hold", "place", "case-1", "--custodian", "alice", "--folder", "user.alice.Work", "--matter", "Acme v. Us", "--actor", "counsel")
	if rc, _, errb := cmd("archive", "hold", "place", "case-1", "--custodian", "bob", "--actor", "counsel"); rc != 1 || !strings.Contains(errb, "already placed") {
		t.Errorf("second placement: %d %s", rc, errb)
	}
	var hs []archive.Hold
	if err := json.Unmarshal([]byte(must("archive", "hold", "list", "--json")), &hs); err != nil || len(hs) != 1 || hs[0].Actor != "counsel" || hs[0].Matter != "Acme v. Us" {
		t.Fatalf("holds %+v %v", hs, err)
	}

	// A dry run (the default) lists and removes nothing.
	out := must("archive", "purge", now)
	if !strings.Contains(out, "dry run: 2 bodies") || !strings.Contains(out, "held "+sum("work")+": expired, kept by hold case-1") {
		t.Fatalf("dry run:\n%s", out)
	}
	if rc, _, errb := get("mine"); rc != 0 {
		t.Fatalf("after the dry run: %s", errb)
	}
	// A held message cannot be erased.
	if rc, _, errb := cmd("archive", "erase", "--message", "<work@example.org>", "--actor", "dpo"); rc != 1 || !strings.Contains(errb, `legal hold "case-1" (Acme v. Us) placed by counsel`) {
		t.Fatalf("erase held: %d %s", rc, errb)
	}
	// Purge: the held message survives.
	out = must("archive", "purge", "--execute", now, "--actor", "dpo", "--batch", "1")
	if !strings.Contains(out, "purged 2 bodies") || !strings.Contains(out, "in 2 Purge events") {
		t.Fatalf("purge:\n%s", out)
	}
	if rc, _, errb := get("mine"); rc != 1 || !strings.Contains(errb, "purged by dpo") {
		t.Fatalf("get purged: %d %s", rc, errb)
	}
	if rc, _, errb := get("work"); rc != 0 {
		t.Fatalf("held message: %s", errb)
	}
	// Released, the next purge takes it.
	must("archive", "hold", "release", "case-1", "--actor", "counsel")
	if out := must("archive", "purge", "--dry-run=false", now, "--actor", "dpo"); !strings.Contains(out, "purged 1 bodies") {
		t.Fatalf("purge after release:\n%s", out)
	}
	if rc, _, _ := get("work"); rc != 1 {
		t.Fatal("work survived the purge after release")
	}

	// Erasure of a person: get fails, naming the erasure; the log chain and
	// the archive still verify.
	out = must("archive", "erase", "--user", "alice", "--actor", "dpo", "--reason", "GDPR request 17")
	if !strings.Contains(out, "erased "+sum("alicenew")) || !strings.Contains(out, "erased 1 bodies") {
		t.Fatalf("erase:\n%s", out)
	}
	rc, _, errb := get("alicenew")
	if rc != 1 || !strings.Contains(errb, "erased by dpo") {
		t.Fatalf("get erased: %d %s", rc, errb)
	}
	if rc, out, errb := cmd("verify"); rc != 0 {
		t.Fatalf("bonnie verify: %s %s", out, errb)
	}
	out = must("archive", "--key-file", key, "verify")
	if !strings.Contains(out, "ok: 1 bodies") || !strings.Contains(out, "erased: "+sum("alicenew")+" by dpo") || !strings.Contains(out, "purged: "+sum("mine")) {
		t.Fatalf("archive verify:\n%s", out)
	}

	// The events are in the log, with their actors.
	lg, err := sqlite.Open(context.Background(), filepath.Join(data, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := lg.Read(context.Background(), 0, 1000)
	lg.Close()
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, r := range recs {
		if archive.GovernanceEvents.Has(r.Event.Type) {
			seen = append(seen, r.Event.Type.String()+"/"+r.Event.User)
		}
	}
	want := "vnd.bonnie.RetentionPolicy/dpo vnd.bonnie.RetentionPolicy/dpo vnd.bonnie.RetentionPolicy/dpo vnd.bonnie.LegalHold/counsel " +
		"vnd.bonnie.Purge/dpo vnd.bonnie.Purge/dpo vnd.bonnie.LegalHold/counsel vnd.bonnie.Purge/dpo vnd.bonnie.Erasure/dpo"
	if got := strings.Join(seen, " "); got != want {
		t.Fatalf("events:\n%s\nwant\n%s", got, want)
	}

	// Tampering with an encrypted body is found; without the key nothing
	// can be read.
	blobs, _ := archive.Paths(data)
	p := filepath.Join(blobs, sum("bobnew")[:2], sum("bobnew")+blob.EncSuffix)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	os.Chmod(p, 0o600)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rc, out, _ = cmd("archive", "--key-file", key, "verify")
	if rc != 1 || !strings.Contains(out, "CORRUPT "+p) || !strings.Contains(out, "does not authenticate") {
		t.Fatalf("tampered: %d\n%s", rc, out)
	}
	t.Setenv(keyFileEnv, "")
	if rc, _, errb := cmd("archive", "get", sum("bobnew")); rc != 1 || !strings.Contains(errb, "no site key") {
		t.Fatalf("get without the key: %d %s", rc, errb)
	}
}

func TestEraseAPersonKeepsSharedBodies(t *testing.T) {
	data, key, bodies := governedArchive(t)
	rc, out, errb := bonnieCmd(t, nil, "--data", data, "archive", "--key-file", key, "erase", "--user", "alice", "--actor", "dpo", "--dry-run")
	if rc != 0 || !strings.Contains(out, "would erase 3 bodies") || !strings.Contains(out, "kept "+blob.Digest(bodies["shared"])+": also held by bob") {
		t.Fatalf("dry run: %d\n%s\n%s", rc, out, errb)
	}
	if rc, _, errb := bonnieCmd(t, nil, "--data", data, "archive", "--key-file", key, "get", "<mine@example.org>"); rc != 0 {
		t.Fatalf("after the dry run: %s", errb)
	}
}
