package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
)

// TestBodyFetchOverTLS: bonnied fetches the bodies of a Cyrus that takes
// IMAP over TLS only with a private CA, with --imap-ca-file, over STARTTLS
// and over implicit TLS: the log names the appended message's body by the
// SHA-256 of its bytes.
func TestBodyFetchOverTLS(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	for _, mode := range []string{"starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			sock := cyrustest.SocketPath(t, "notify.sock")
			s := startCyrus(t, cyrustest.Options{
				Users:        map[string]string{"alice": "alice-pw"},
				NotifySocket: sock,
				TLS:          true,
			})
			addr := s.IMAPAddr()
			if mode == "tls" {
				addr = s.IMAPSAddr()
			}
			data := t.TempDir()
			adminPW := filepath.Join(t.TempDir(), "admin.pw")
			if err := os.WriteFile(adminPW, []byte(cyrustest.AdminPassword+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			lv := newLogView(data)
			startDaemon(t, "bonnied", daemonConfig{data: data, datagram: sock, extra: []string{
				"--imap", addr, "--imap-tls", mode, "--imap-ca-file", s.CAFile(),
				"--imap-user", cyrustest.AdminUser, "--imap-password-file", adminPW, "--sinks", "archive",
			}}, lv)
			alice, _ := dialIMAP(t, s, "alice")
			msg := testMessage("<tls-"+mode+"@bonnie.test>", "Over "+mode)
			uid, err := appendMessage(alice, "INBOX", msg, nil)
			if err != nil {
				t.Fatal(err)
			}
			waitBody(t, lv, "user.alice", uint32(uid))
			sum := sha256.Sum256([]byte(msg))
			want := hex.EncodeToString(sum[:])
			found := false
			for _, r := range ofType(lv.records(t), bonnie.MessageAppend) {
				for _, b := range r.Event.Bodies {
					if b.UID == uint32(uid) {
						found = b.Digest == want
						if !found {
							t.Errorf("body of UID %d: sha256 %s, want %s", uid, b.Digest, want)
						}
					}
				}
			}
			if !found {
				t.Errorf("no body of UID %d with sha256 %s in the log", uid, want)
			}
		})
	}
}
