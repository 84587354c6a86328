package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/httpapi"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

func TestHTTPFlags(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	_, line, _ := httpapi.NewToken(httpapi.RoleAuditor, "ops", time.Time{})
	os.WriteFile(tokens, []byte(line+"\n"), 0o600)
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("sha256:00 auditor ops\n"), 0o600)
	base := []string{"--cyrus-socket", "/tmp/x"}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{nil, ""},
		{[]string{"--http", ":8080", "--http-tokens", tokens}, ""},
		{[]string{"--http", ":8080"}, "no anonymous access"},
		{[]string{"--http-tokens", tokens}, "need --http"},
		{[]string{"--http", ":8080", "--http-tokens", bad}, "64 hex digits"},
		{[]string{"--http", ":8080", "--http-tokens", filepath.Join(dir, "none")}, "no such file"},
		{[]string{"--http", ":8080", "--http-tokens", tokens, "--http-cert", tokens}, "both --http-cert and --http-key"},
	} {
		_, err := parse(append(base, tc.args...), io.Discard)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
		}
	}
	for in, want := range map[string]string{":8080": "127.0.0.1:8080", "8080": "127.0.0.1:8080",
		"0.0.0.0:80": "0.0.0.0:80", "[::1]:9": "[::1]:9", "[::]:9": "[::]:9"} {
		if got, err := listenAddr(in); err != nil || got != want {
			t.Errorf("listenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// syncBuffer is the daemon's standard error, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHTTPAPI runs bonnied with --http over a log of the real Cyrus
// session (testdata) and the discovery sink, and asks it over HTTP:
// refused without a valid token, redacted for a user, everything for an
// auditor, every answered request in the log as a Query event by its
// principal.
func TestHTTPAPI(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	// The log of the capture, as an earlier bonnied would have left it.
	lg, err := sqlite.Open(ctx, datadir.LogPath(data))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg})
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../../testdata/cyrus-3.6.1/*.bin")
	if len(files) != 98 {
		t.Fatalf("want 98 captures, got %d", len(files))
	}
	sort.Strings(files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := eng.Ingest(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	lg.Close()

	secrets := t.TempDir()
	tok := map[string]string{}
	var lines []string
	for who, p := range map[string][2]string{"auditor": {"auditor", "ops@example.org"}, "bob": {"user", "bob"}} {
		token, line, err := httpapi.NewToken(httpapi.Role(p[0]), p[1], time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		tok[who], lines = token, append(lines, line)
	}
	tokens := filepath.Join(secrets, "tokens")
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--data", data, "--cyrus-socket", filepath.Join(data, "notify.sock"),
			"--metrics", "", "--sinks", "discovery", "--http", "127.0.0.1:0", "--http-tokens", tokens}, stderr)
	}()
	urlLine := regexp.MustCompile(`msg=api url=(http://127\.0\.0\.1:\d+)/v1/`)
	var base string
	deadline := time.Now().Add(waitTimeout)
	for base == "" {
		if m := urlLine.FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("bonnied stopped: %v\n%s", err, stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no API address in:\n%s", stderr)
		}
	}
	get := func(path, auth string, out any) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil && resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s: %v: %s", path, err, b)
			}
		}
		return resp
	}
	const work = "/v1/history/folder/user.alice.Work?messages=true"
	forged := []byte(tok["auditor"])
	forged[len(forged)-1] ^= 1
	for _, auth := range []string{"", "Bearer " + string(forged), "Bearer " + httpapi.HashToken(tok["auditor"]), "Basic b3BzOm9wcw=="} {
		resp := get(work, auth, nil)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("auth %q: %d %q", auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	type timeline struct {
		Entries []httpapi.Entry `json:"entries"`
	}
	var all, bobs []timeline
	if resp := get(work, "Bearer "+tok["auditor"], &all); resp.StatusCode != 200 || len(all) != 1 {
		t.Fatalf("auditor: %d", resp.StatusCode)
	}
	if resp := get(work, "Bearer "+tok["bob"], &bobs); resp.StatusCode != 200 || len(bobs) != 1 {
		t.Fatalf("bob: %d", resp.StatusCode)
	}
	if len(all[0].Entries) == 0 || len(bobs[0].Entries) != len(all[0].Entries) {
		t.Fatalf("entries: auditor %d, bob %d", len(all[0].Entries), len(bobs[0].Entries))
	}
	visible := 0
	for i, e := range bobs[0].Entries {
		if all[0].Entries[i].Redacted || e.Position != all[0].Entries[i].Position {
			t.Errorf("entry %d: auditor %+v, bob %+v", i, all[0].Entries[i], e)
		}
		if !e.Redacted {
			visible++
			if e.ACLSubject != "bob" || e.ACLRights != "lrs" {
				t.Errorf("bob sees %+v", e)
			}
		}
	}
	if visible != 1 {
		t.Errorf("bob sees %d entries of alice's folder, want his grant", visible)
	}
	if resp := get("/v1/history/user/alice", "Bearer "+tok["bob"], nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob about alice: %d", resp.StatusCode)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("bonnied: %v\n%s", err, stderr)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("bonnied did not stop:\n%s", stderr)
	}
	if strings.Contains(stderr.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", stderr)
	}
	if n := strings.Count(stderr.String(), `msg="api request refused: not authenticated"`); n != 4 {
		t.Errorf("%d refusals logged, want 4", n)
	}
	// The three authenticated requests are in the log, by their principals.
	lg, err = sqlite.Open(ctx, datadir.LogPath(data))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	recs, err := lg.Read(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var by []string
	for _, r := range recs {
		if r.Event.Type == bonnie.Query {
			if r.Event.Service != httpapi.Service || r.Event.ClientIP != "127.0.0.1" {
				t.Errorf("query %+v", r.Event)
			}
			by = append(by, r.Event.User)
		}
	}
	if strings.Join(by, ",") != "ops@example.org,bob,bob" {
		t.Errorf("queries by %v", by)
	}
	if err := lg.Verify(ctx); err != nil {
		t.Errorf("verify: %v", err)
	}
}
