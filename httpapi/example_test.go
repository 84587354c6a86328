package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/httpapi"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// The API over a small log: alice shares her folder with bob at 09:05.
// The auditor sees the whole history; bob sees what happened after the
// grant, and the rest redacted; a request without a token is refused.
// Every answered request is a Query event in the log.
func Example() {
	dir, _ := os.MkdirTemp("", "httpapi-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lg.Close()
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	const box = `"uri":"imap://h/user.alice.Shared;UIDVALIDITY=7","mailboxID":"f1"`
	for _, js := range []string{
		`{"event":"MailboxCreate","timestamp":"2026-11-28T09:00:00Z","user":"alice",` + box + `,"vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\t"}`,
		`{"event":"MessageNew","timestamp":"2026-11-28T09:01:00Z","user":"alice","uri":"imap://h/user.alice.Shared;UIDVALIDITY=7/;UID=1","mailboxID":"f1","uidset":"1","vnd.cmu.midset":"<m1@example.org>","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\t"}`,
		`{"event":"AclChange","timestamp":"2026-11-28T09:05:00Z","user":"alice",` + box + `,"aclSubject":"bob","aclRights":"lrs","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\tbob\tlrs\t"}`,
		`{"event":"MessageRead","timestamp":"2026-11-28T09:10:00Z","user":"alice",` + box + `,"uidset":"1","vnd.cmu.midset":"<m1@example.org>","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\tbob\tlrs\t"}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(js), "example"); err != nil {
			fmt.Println(err)
			return
		}
	}
	x, err := discovery.Open(ctx, discovery.Path(dir), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer x.Close()

	// The tokens file keeps only hashes; the tokens go to their holders.
	auditor, line1, _ := httpapi.NewToken(httpapi.RoleAuditor, "ops@example.org", time.Time{})
	bob, line2, _ := httpapi.NewToken(httpapi.RoleUser, "bob", time.Time{})
	file := filepath.Join(dir, "tokens")
	os.WriteFile(file, []byte(line1+"\n"+line2+"\n"), 0o600)
	tokens, err := httpapi.LoadTokens(file)
	if err != nil {
		fmt.Println(err)
		return
	}
	api, err := httpapi.New(httpapi.Options{Index: x, Log: lg, Recorder: eng, Tokens: tokens,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := httptest.NewServer(api)
	defer srv.Close()

	get := func(token, path string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		fmt.Println(strings.TrimSpace(resp.Status + " " + resp.Header.Get("WWW-Authenticate")))
		var tl httpapi.MessageTimeline
		if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&tl) == nil {
			for _, e := range tl.Entries {
				if e.Redacted {
					fmt.Printf("  #%d %s redacted\n", e.Position, e.Time.Format("15:04"))
				} else {
					fmt.Printf("  #%d %s %s %s by %s\n", e.Position, e.Time.Format("15:04"), e.Action, e.Path, e.Login)
				}
			}
		}
	}
	get("", "/v1/history/message/m1@example.org")
	get(auditor, "/v1/history/message/m1@example.org")
	get(bob, "/v1/history/message/m1@example.org")

	qs, _ := x.Queries(ctx)
	for _, q := range qs {
		var asked discovery.Asked
		json.Unmarshal(q.Detail, &asked)
		fmt.Printf("recorded: %s asked %q via %s\n", q.Login, asked.Command, q.Service)
	}
	// Output:
	// 401 Unauthorized Bearer realm="bonnie"
	// 200 OK
	//   #2 09:01 delivered user.alice.Shared by alice
	//   #4 09:10 read user.alice.Shared by alice
	// 200 OK
	//   #2 09:01 redacted
	//   #4 09:10 read user.alice.Shared by alice
	// recorded: ops@example.org asked "history message" via bonnie-api
	// recorded: bob asked "history message" via bonnie-api
}
