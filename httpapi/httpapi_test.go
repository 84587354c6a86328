package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/httpapi"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// env is the API over the real Cyrus 3.6.1 session (testdata), served on
// loopback by httptest.
type env struct {
	t      *testing.T
	lg     *sqlite.Log
	eng    *bonnie.Engine
	x      *discovery.Index
	api    *httpapi.Server
	srv    *httptest.Server
	tokens string // the tokens file
	tok    map[string]string
	now    time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../testdata/cyrus-3.6.1/*.bin")
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
			t.Fatalf("%s: %v", f, err)
		}
	}
	x, err := discovery.Open(ctx, discovery.Path(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	e := &env{t: t, lg: lg, eng: eng, x: x, tok: map[string]string{}, now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	var lines []string
	for _, p := range []struct {
		name, principal string
		role            httpapi.Role
		expires         time.Time
	}{
		{"auditor", "ops@example.org", httpapi.RoleAuditor, time.Time{}},
		{"alice", "alice", httpapi.RoleUser, time.Time{}},
		{"bob", "bob", httpapi.RoleUser, time.Time{}},
		{"expired", "bob", httpapi.RoleUser, e.now.Add(-time.Hour)},
		{"revoked", "ops@example.org", httpapi.RoleAuditor, time.Time{}},
	} {
		tok, line, err := httpapi.NewToken(p.role, p.principal, p.expires)
		if err != nil {
			t.Fatal(err)
		}
		e.tok[p.name] = tok
		lines = append(lines, line)
	}
	e.tokens = filepath.Join(dir, "tokens")
	if err := os.WriteFile(e.tokens, []byte("# test tokens\n"+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toks, err := httpapi.LoadTokens(e.tokens)
	if err != nil {
		t.Fatal(err)
	}
	e.api, err = httpapi.New(httpapi.Options{Index: x, Log: lg, Recorder: eng, Tokens: toks, Host: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.api)
	t.Cleanup(e.srv.Close)
	return e
}

// get sends a GET with the Authorization header auth ("" for none) and
// decodes a JSON answer into out (when not nil).
func (e *env) get(path, auth string, out any) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			e.t.Fatalf("%s: %v\n%s", path, err, body)
		}
	}
	if resp.StatusCode != http.StatusOK && !strings.Contains(string(body), `"error"`) {
		e.t.Errorf("%s: %d without an error body: %s", path, resp.StatusCode, body)
	}
	return resp
}

func (e *env) as(who, path string, out any) int {
	e.t.Helper()
	return e.get(path, "Bearer "+e.tok[who], out).StatusCode
}

// queries returns the Query events in the log.
func (e *env) queries() []*bonnie.Event {
	e.t.Helper()
	var out []*bonnie.Event
	var pos bonnie.Position
	for {
		recs, err := e.lg.Read(context.Background(), pos, 1000)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			pos = r.Position
			if r.Event != nil && r.Event.Type == bonnie.Query {
				out = append(out, r.Event)
			}
		}
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	forged := []byte(e.tok["auditor"])
	if forged[10] == 'A' {
		forged[10] = 'B'
	} else {
		forged[10] = 'A'
	}
	// A token of the right form that was never issued.
	unknown, _, err := httpapi.NewToken(httpapi.RoleAuditor, "ops@example.org", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, auth string
		invalid          bool // error="invalid_token" in the challenge
	}{
		{"missing", "/v1/history/folder/user.alice.Work", "", false},
		{"missing, unknown path", "/v1/nothing", "", false},
		{"empty bearer", "/v1/search", "Bearer ", false},
		{"basic", "/v1/search", "Basic " + e.tok["auditor"], false},
		{"the hash instead of the token", "/v1/search", "Bearer " + httpapi.HashToken(e.tok["auditor"]), true},
		{"bad", "/v1/search", "Bearer not-a-token", true},
		{"never issued", "/v1/search", "Bearer " + unknown, true},
		{"forged: one character changed", "/v1/search", "Bearer " + string(forged), true},
		{"truncated", "/v1/search", "Bearer " + e.tok["auditor"][:len(e.tok["auditor"])-1], true},
		{"extended", "/v1/search", "Bearer " + e.tok["auditor"] + "x", true},
		{"expired", "/v1/history/user/bob", "Bearer " + e.tok["expired"], true},
		{"token in the query, not the header", "/v1/search?access_token=" + url.QueryEscape(e.tok["auditor"]), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.get(tc.path, tc.auth, nil)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			ch := resp.Header.Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, "Bearer ") || strings.Contains(ch, "invalid_token") != tc.invalid {
				t.Errorf("WWW-Authenticate: %q", ch)
			}
		})
	}
	// Revocation: the line removed from the file, the token stops working
	// without a restart.
	if code := e.as("revoked", "/v1/whoami", nil); code != http.StatusOK {
		t.Fatalf("before revocation: %d", code)
	}
	b, _ := os.ReadFile(e.tokens)
	var kept []string
	revoked := httpapi.HashToken(e.tok["revoked"])
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, revoked) {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(e.tokens, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := e.as("revoked", "/v1/whoami", nil); code != http.StatusUnauthorized {
		t.Errorf("after revocation: %d, want 401", code)
	}
	if code := e.as("auditor", "/v1/whoami", nil); code != http.StatusOK {
		t.Errorf("another token after the revocation: %d", code)
	}
	// A tokens file others may write is refused: every token fails.
	if err := os.Chmod(e.tokens, 0o666); err != nil {
		t.Fatal(err)
	}
	if code := e.as("auditor", "/v1/whoami", nil); code != http.StatusUnauthorized {
		t.Errorf("world-writable tokens file: %d, want 401", code)
	}
	os.Chmod(e.tokens, 0o600)
	// Unauthenticated requests are counted, not recorded; the two
	// whoami requests that were answered are.
	st := e.api.Stats()
	if st.Unauthenticated != 14 || st.Answered != 2 {
		t.Errorf("stats: %+v", st)
	}
	if qs := e.queries(); len(qs) != 2 || qs[0].User != "ops@example.org" {
		t.Errorf("recorded: %d queries", len(qs))
	}
}

// timeline is a folder timeline as a client decodes it.
type timeline struct {
	Folder  string               `json:"folder"`
	Names   []httpapi.FolderName `json:"names"`
	Entries []httpapi.Entry      `json:"entries"`
}

func TestAuthorisation(t *testing.T) {
	e := newEnv(t)
	const work = "/v1/history/folder/user.alice.Work?messages=true"
	var all, bobs, alices []timeline
	if code := e.as("auditor", work, &all); code != http.StatusOK || len(all) != 1 {
		t.Fatalf("auditor: %d %+v", code, all)
	}
	if code := e.as("bob", work, &bobs); code != http.StatusOK || len(bobs) != 1 {
		t.Fatalf("bob: %d %+v", code, bobs)
	}
	if code := e.as("alice", work, &alices); code != http.StatusOK || len(alices) != 1 {
		t.Fatalf("alice: %d %+v", code, alices)
	}
	// Nothing is missing: the same positions and times for everyone.
	if len(bobs[0].Entries) != len(all[0].Entries) || len(alices[0].Entries) != len(all[0].Entries) {
		t.Fatalf("entries: auditor %d, bob %d, alice %d", len(all[0].Entries), len(bobs[0].Entries), len(alices[0].Entries))
	}
	var grant, revoke time.Time
	for i, a := range all[0].Entries {
		b := bobs[0].Entries[i]
		if a.Redacted || alices[0].Entries[i].Redacted {
			t.Errorf("the auditor and the owner see everything: %+v", a)
		}
		if b.Position != a.Position || !b.Time.Equal(a.Time) {
			t.Errorf("bob's entry %d: %+v, auditor's %+v", i, b, a)
		}
		switch {
		case a.Action == discovery.ActACLGranted && a.ACLSubject == "bob":
			grant = a.Time
			// Bob could read the folder from the grant on.
			if b.Redacted || b.Action != discovery.ActACLGranted || b.Path != "user.alice.Work" {
				t.Errorf("bob does not see his grant: %+v", b)
			}
		case a.Action == discovery.ActACLRevoked && a.ACLSubject == "bob":
			revoke = a.Time
			fallthrough
		default:
			// Before the grant and after the revocation: redacted.
			if !b.Redacted || b.Action != "" || b.Path != "" || b.Login != "" || b.MessageID != "" {
				t.Errorf("bob sees %+v", b)
			}
		}
	}
	if grant.IsZero() || revoke.IsZero() {
		t.Fatal("no grant and revocation for bob in the capture")
	}
	// The wire form of a redacted entry is its position, time and the mark.
	raw := getRaw(t, e, "bob", work)
	if !strings.Contains(raw, `"redacted":true`) || strings.Contains(raw, "<harness-") {
		t.Errorf("bob's raw answer leaks or lacks redaction: %s", raw)
	}
	// Names: bob saw the folder as user.alice.Work, never as Projects.
	for _, n := range bobs[0].Names {
		if n.Path == "user.alice.Projects" {
			t.Errorf("bob sees a later name: %+v", bobs[0].Names)
		}
	}

	// A message of alice's: every entry redacted for bob, none missing.
	var am, bm httpapi.MessageTimeline
	const msg = "/v1/history/message/" + "%3Charness-2@example.org%3E"
	if e.as("auditor", msg, &am) != http.StatusOK || e.as("bob", msg, &bm) != http.StatusOK {
		t.Fatal("message timeline")
	}
	if len(am.Entries) == 0 || len(bm.Entries) != len(am.Entries) || len(bm.Places) != len(am.Places) {
		t.Fatalf("auditor %d entries, bob %d", len(am.Entries), len(bm.Entries))
	}
	for i, b := range bm.Entries {
		if !b.Redacted || b.Position != am.Entries[i].Position {
			t.Errorf("bob sees alice's message: %+v", b)
		}
	}
	for _, p := range bm.Places {
		if !p.Redacted || p.Subject != "" {
			t.Errorf("bob sees a place: %+v", p)
		}
	}

	// Access at a time.
	between := grant.Add(revoke.Sub(grant) / 2).Format(time.RFC3339Nano)
	before := grant.Add(-time.Second).Format(time.RFC3339Nano)
	var fas []httpapi.FolderAccess
	if code := e.as("bob", "/v1/access?folder=user.alice.Work&at="+url.QueryEscape(between), &fas); code != http.StatusOK {
		t.Fatalf("bob, folder he could read: %d", code)
	}
	if len(fas) != 1 || fas[0].Redacted || len(fas[0].Readers) != 2 {
		t.Errorf("bob, access: %+v", fas)
	}
	for _, tc := range []struct{ who, path string }{
		{"bob", "/v1/access?folder=user.alice.Work&at=" + url.QueryEscape(before)},
		{"bob", "/v1/access?folder=user.alice.Work&at=" + url.QueryEscape(revoke.Format(time.RFC3339Nano))},
		{"bob", "/v1/access?folder=no.such.folder"},
		{"bob", "/v1/access?user=alice&at=" + url.QueryEscape(between)},
		{"bob", "/v1/history/user/alice"},
		{"alice", "/v1/history/user/bob"},
	} {
		if code := e.as(tc.who, tc.path, nil); code != http.StatusForbidden {
			t.Errorf("%s %s: %d, want 403", tc.who, tc.path, code)
		}
	}
	var pa discovery.PersonAccess
	if code := e.as("bob", "/v1/access?user=bob&at="+url.QueryEscape(between), &pa); code != http.StatusOK ||
		len(pa.Folders) != 2 || pa.Folders[0].Path != "user.alice.Work" {
		t.Errorf("bob about himself: %d %+v", code, pa)
	}
	if code := e.as("auditor", "/v1/access?user=bob&at="+url.QueryEscape(between), &pa); code != http.StatusOK || len(pa.Folders) != 2 {
		t.Errorf("auditor about bob: %d %+v", code, pa)
	}
	var uh httpapi.UserHistory
	if code := e.as("alice", "/v1/history/user/alice", &uh); code != http.StatusOK || len(uh.Entries) < 20 || len(uh.Sessions) == 0 {
		t.Errorf("alice's own history: %d, %d entries, %d sessions", code, len(uh.Entries), len(uh.Sessions))
	}
	for _, en := range uh.Entries {
		if en.Redacted {
			t.Errorf("alice's own act redacted: %+v", en)
		}
	}

	// Search: the auditor finds alice's mail; bob's search leaves out
	// what he could not read.
	var hits []discovery.Hit
	if code := e.as("auditor", "/v1/search?custodian=alice", &hits); code != http.StatusOK || len(hits) == 0 {
		t.Fatalf("auditor search: %d, %d hits", code, len(hits))
	}
	resp := e.get("/v1/search?custodian=alice&subject=first", "Bearer "+e.tok["bob"], &hits)
	if resp.StatusCode != http.StatusOK || len(hits) != 0 || resp.Header.Get("Bonnie-Filtered") != "true" {
		t.Errorf("bob's search: %d, %d hits", resp.StatusCode, len(hits))
	}

	// Objects: none in this capture; 404, and a bad parameter is a 400.
	if code := e.as("bob", "/v1/objects/nothing", nil); code != http.StatusNotFound {
		t.Errorf("object: %d", code)
	}
	if code := e.as("bob", "/v1/objects/x?diff=1", nil); code != http.StatusBadRequest {
		t.Errorf("bad diff: %d", code)
	}
	if code := e.as("bob", "/v1/access?at=yesterday&user=bob", nil); code != http.StatusBadRequest {
		t.Errorf("bad time: %d", code)
	}
}

func getRaw(t *testing.T, e *env, who, path string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.tok[who])
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestRequestAudit: every authenticated request is a Query event with
// the principal as actor, recorded before the answer, refusals included.
func TestRequestAudit(t *testing.T) {
	e := newEnv(t)
	reqs := []struct {
		who, path string
		status    int
	}{
		{"auditor", "/v1/history/folder/user.alice.Work", 200},
		{"bob", "/v1/history/message/harness-2@example.org", 200},
		{"bob", "/v1/history/user/alice", 403},
		{"alice", "/v1/search?subject=first", 200},
		{"alice", "/v1/objects/nothing", 404},
		{"alice", "/v1/nothing", 404},
		{"bob", "/v1/access?folder=user.alice", 403},
	}
	for _, r := range reqs {
		if code := e.as(r.who, r.path, nil); code != r.status {
			t.Errorf("%s %s: %d, want %d", r.who, r.path, code, r.status)
		}
	}
	// And an unauthenticated one, which is not recorded.
	e.get("/v1/history/folder/user.alice.Work", "Bearer nope", nil)
	qs := e.queries()
	if len(qs) != len(reqs) {
		t.Fatalf("%d queries recorded for %d authenticated requests", len(qs), len(reqs))
	}
	principals := map[string]string{"auditor": "ops@example.org", "alice": "alice", "bob": "bob"}
	for i, q := range qs {
		r := reqs[i]
		var body struct {
			Asked discovery.Asked `json:"vnd.bonnie.query"`
		}
		if err := json.Unmarshal(q.Raw, &body); err != nil {
			t.Fatal(err)
		}
		args, _ := body.Asked.Args.(map[string]any)
		u, _ := url.Parse(r.path)
		if q.User != principals[r.who] || q.Service != httpapi.Service || q.ClientIP != "127.0.0.1" ||
			body.Asked.By != principals[r.who] || args["path"] != u.Path || args["role"] == "" || args["token"] == "" {
			t.Errorf("query %d (%s %s): user %q service %q client %q asked %+v", i, r.who, r.path, q.User, q.Service, q.ClientIP, body.Asked)
		}
		if refused := args["refused"] != nil; refused != (r.status == 403 || r.path == "/v1/nothing") {
			t.Errorf("query %d (%s): refused %v", i, r.path, args["refused"])
		}
	}
	// The discovery index shows them in its chain of custody, with the
	// client's address; bob's own queries are visible to him.
	if _, err := e.x.CatchUp(context.Background(), e.lg); err != nil { // the last refusal
		t.Fatal(err)
	}
	es, err := e.x.Queries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(reqs) || es[1].Login != "bob" || !strings.HasPrefix(es[1].Client, "127.0.0.1:") {
		t.Errorf("index queries: %d, the second by %q from %q", len(es), es[1].Login, es[1].Client)
	}
	var uh httpapi.UserHistory
	if e.as("bob", "/v1/history/user/bob", &uh) != 200 {
		t.Fatal("bob's history")
	}
	n := 0
	for _, en := range uh.Entries {
		if en.Action == discovery.ActQuery && !en.Redacted {
			n++
		}
	}
	if n != 4 { // his three earlier requests and this one
		t.Errorf("bob sees %d of his queries", n)
	}
	if st := e.api.Stats(); st.Answered != 5 || st.Refused != 3 || st.Unauthenticated != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// failingRecorder cannot record.
type failingRecorder struct{}

func (failingRecorder) Record(context.Context, []byte, string) (bonnie.Position, bool, error) {
	return 0, false, fmt.Errorf("disk full")
}

// TestNoAnswerWithoutRecord: a query that cannot be recorded is not
// answered.
func TestNoAnswerWithoutRecord(t *testing.T) {
	e := newEnv(t)
	toks, err := httpapi.LoadTokens(e.tokens)
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Options{Index: e.x, Log: e.lg, Recorder: failingRecorder{}, Tokens: toks,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/history/folder/user.alice.Work", nil)
	req.Header.Set("Authorization", "Bearer "+e.tok["auditor"])
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(b), "user.alice") {
		t.Errorf("%d %s", resp.StatusCode, b)
	}
	if !slices.Equal([]int64{api.Stats().Failed}, []int64{1}) {
		t.Errorf("stats: %+v", api.Stats())
	}
}

func TestTokensFile(t *testing.T) {
	dir := t.TempDir()
	tok, line, err := httpapi.NewToken(httpapi.RoleUser, "alice", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.HashToken(tok)
	for name, tc := range map[string]struct{ content, err string }{
		"good":       {"# comment\n\n" + line + "\n", ""},
		"bad hex":    {"sha256:zz user alice\n", "64 hex digits"},
		"no prefix":  {strings.TrimPrefix(line, "sha256:") + "\n", "64 hex digits"},
		"bad role":   {h + " admin alice\n", "role must be"},
		"no name":    {h + " user\n", "want 'sha256:HEX"},
		"duplicate":  {line + "\n" + h + " auditor ops\n", "the same token twice"},
		"bad expiry": {h + " user alice expires=tomorrow\n", "expires"},
		"extra word": {h + " user alice soon\n", "unexpected"},
	} {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(f, []byte(tc.content), 0o600)
		toks, err := httpapi.LoadTokens(f)
		if tc.err == "" {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			p, err := toks.Authenticate(tok, time.Now())
			if err != nil || p.Name != "alice" || p.Role != httpapi.RoleUser || !strings.HasPrefix(h, "sha256:"+p.TokenID) {
				t.Errorf("%s: %+v %v", name, p, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", name, err, tc.err)
		}
	}
	// A file that breaks after loading refuses every token until fixed.
	f := filepath.Join(dir, "good")
	toks, _ := httpapi.LoadTokens(f)
	os.WriteFile(f, []byte(line+"\nbroken\n"), 0o600)
	if _, err := toks.Authenticate(tok, time.Now()); err == nil {
		t.Error("a broken file still authenticates")
	}
	os.WriteFile(f, []byte(line+"\n"), 0o600)
	if _, err := toks.Authenticate(tok, time.Now()); err != nil {
		t.Errorf("fixed file: %v", err)
	}
}

// TestConcurrentRequests: principals asking at once (run with -race).
func TestConcurrentRequests(t *testing.T) {
	e := newEnv(t)
	paths := []string{"/v1/history/folder/user.alice.Work?messages=true", "/v1/history/message/harness-2@example.org",
		"/v1/access?user=bob", "/v1/search?custodian=alice", "/v1/whoami"}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 12; i++ {
		who := []string{"auditor", "alice", "bob"}[i%3]
		path := paths[i%len(paths)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
			req.Header.Set("Authorization", "Bearer "+e.tok[who])
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusForbidden {
				errs <- fmt.Errorf("%s %s: %d", who, path, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := e.api.Stats(); st.Answered+st.Refused != 12 || len(e.queries()) != 12 {
		t.Errorf("stats %+v, %d queries recorded", st, len(e.queries()))
	}
}
