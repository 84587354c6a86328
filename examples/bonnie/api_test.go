package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie/httpapi"
)

// TestAPIToken: the token is printed once, the file gets its hash only,
// and the token authenticates against that file.
func TestAPIToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	code, out, errs := bonnieCmd(t, nil, "api", "token", "--role", "user", "--principal", "alice", "--expires", "90d", "--append", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	token := strings.TrimSpace(out)
	if !strings.HasPrefix(token, httpapi.TokenPrefix) || strings.Count(out, "\n") != 1 {
		t.Fatalf("stdout %q", out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), token) || !strings.HasPrefix(string(b), httpapi.HashToken(token)+" user alice expires=") {
		t.Fatalf("tokens file %q", b)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	toks, err := httpapi.LoadTokens(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := toks.Authenticate(token, time.Now())
	if err != nil || p.Role != httpapi.RoleUser || p.Name != "alice" || p.Expires.Before(time.Now().Add(89*24*time.Hour)) {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := toks.Authenticate(token, time.Now().Add(91*24*time.Hour)); err == nil {
		t.Error("the token outlived its expiry")
	}
	// Without --append the line goes to standard error.
	code, out, errs = bonnieCmd(t, nil, "api", "token", "--role", "auditor", "--principal", "ops@example.org")
	if code != 0 || !strings.Contains(errs, httpapi.HashToken(strings.TrimSpace(out))+" auditor ops@example.org\n") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, args := range [][]string{
		{"--role", "admin", "--principal", "x"},
		{"--role", "user", "--principal", "two words"},
		{"--role", "user"},
		{"--role", "user", "--principal", "x", "--expires", "2001-01-01T00:00:00Z"},
	} {
		if code, _, _ := bonnieCmd(t, nil, append([]string{"api", "token"}, args...)...); code == 0 {
			t.Errorf("%v accepted", args)
		}
	}
}
