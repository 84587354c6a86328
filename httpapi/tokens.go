package httpapi

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Role is what a token may see.
type Role string

const (
	// RoleAuditor sees everything.
	RoleAuditor Role = "auditor"
	// RoleUser is bound to one person (a login or persistent id) and sees
	// what that person could read at the time (see the package doc).
	RoleUser Role = "user"
)

// TokenPrefix starts every token NewToken makes ("bonnie_" and 43
// base64url characters: 256 random bits).
const TokenPrefix = "bonnie_"

// maxToken bounds what is hashed of an Authorization header.
const maxToken = 256

// Principal is who a request authenticated as.
type Principal struct {
	Role Role `json:"role"`
	// Name is the principal of the token's line: a login or persistent
	// id for a user, any name for an auditor. It is the actor of the
	// Query events the requests are recorded as.
	Name string `json:"principal"`
	// TokenID is the start of the token's SHA-256: it names the token in
	// the audit without revealing it.
	TokenID string    `json:"token"`
	Expires time.Time `json:"expires,omitzero"`
}

// ErrBadToken: the token is missing, unknown, expired or revoked.
var ErrBadToken = errors.New("httpapi: invalid token")

// NewToken returns a new random token and its line for a tokens file
// (see Tokens). The token itself is shown once and never stored.
func NewToken(role Role, principal string, expires time.Time) (token, line string, err error) {
	if err := checkEntry(role, principal); err != nil {
		return "", "", err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("httpapi: %w", err)
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	line = HashToken(token) + " " + string(role) + " " + principal
	if !expires.IsZero() {
		line += " expires=" + expires.UTC().Format(time.RFC3339)
	}
	return token, line, nil
}

// HashToken returns what a tokens file stores of a token:
// "sha256:" and the hex SHA-256 of the token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func checkEntry(role Role, principal string) error {
	if role != RoleAuditor && role != RoleUser {
		return fmt.Errorf("httpapi: role must be %s or %s, not %q", RoleAuditor, RoleUser, role)
	}
	if principal == "" || strings.ContainsAny(principal, " \t\r\n#") {
		return fmt.Errorf("httpapi: principal %q must be one word", principal)
	}
	return nil
}

type tokenEntry struct {
	sum [sha256.Size]byte
	p   Principal
}

// Tokens is a tokens file: one token per line,
//
//	sha256:HEX ROLE PRINCIPAL [expires=RFC3339]
//
// with blank lines and lines starting with # ignored. Only the SHA-256
// of each token is stored; a presented token is hashed and compared with
// every line in constant time. The file is read again whenever it
// changes (size or modification time), so removing a line revokes a
// token without a restart; a file that no longer parses refuses every
// token until it is fixed. A file that others may write is refused.
type Tokens struct {
	path string

	mu      sync.Mutex
	mod     time.Time
	size    int64
	entries []tokenEntry
	err     error
}

// LoadTokens reads the tokens file at path.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.reload(true); err != nil {
		return nil, err
	}
	return t, nil
}

// Len returns the number of tokens in the file as last read.
func (t *Tokens) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// reload reads the file again when it changed (always when force).
func (t *Tokens) reload(force bool) error {
	fi, err := os.Stat(t.path)
	if err != nil {
		t.entries, t.err = nil, fmt.Errorf("httpapi: tokens file: %w", err)
		return t.err
	}
	if fi.Mode().Perm()&0o002 != 0 {
		t.mod = time.Time{}
		t.entries, t.err = nil, fmt.Errorf("httpapi: tokens file %s is writable by everyone", t.path)
		return t.err
	}
	if !force && t.err == nil && fi.ModTime().Equal(t.mod) && fi.Size() == t.size {
		return nil
	}
	t.mod, t.size = fi.ModTime(), fi.Size()
	f, err := os.Open(t.path)
	if err != nil {
		t.entries, t.err = nil, fmt.Errorf("httpapi: tokens file: %w", err)
		return t.err
	}
	defer f.Close()
	entries, err := parseTokens(f)
	if err != nil {
		t.entries, t.err = nil, fmt.Errorf("httpapi: tokens file %s: %w", t.path, err)
		return t.err
	}
	t.entries, t.err = entries, nil
	return nil
}

func parseTokens(r io.Reader) ([]tokenEntry, error) {
	var out []tokenEntry
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || len(f) > 4 {
			return nil, fmt.Errorf("line %d: want 'sha256:HEX ROLE PRINCIPAL [expires=TIME]'", n)
		}
		h, ok := strings.CutPrefix(f[0], "sha256:")
		b, err := hex.DecodeString(h)
		if !ok || err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("line %d: %q is not sha256: and 64 hex digits", n, f[0])
		}
		e := tokenEntry{p: Principal{Role: Role(f[1]), Name: f[2], TokenID: h[:12]}}
		copy(e.sum[:], b)
		if err := checkEntry(e.p.Role, e.p.Name); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if len(f) == 4 {
			v, ok := strings.CutPrefix(f[3], "expires=")
			if !ok {
				return nil, fmt.Errorf("line %d: unexpected %q", n, f[3])
			}
			if e.p.Expires, err = time.Parse(time.RFC3339, v); err != nil {
				return nil, fmt.Errorf("line %d: expires: %w", n, err)
			}
		}
		for _, o := range out {
			if o.sum == e.sum {
				return nil, fmt.Errorf("line %d: the same token twice", n)
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// Authenticate returns the principal of token at time now, or an error
// wrapping ErrBadToken (or the tokens file's error).
func (t *Tokens) Authenticate(token string, now time.Time) (Principal, error) {
	if token == "" || len(token) > maxToken {
		return Principal{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	sum := sha256.Sum256([]byte(token))
	t.mu.Lock()
	err := t.reload(false)
	entries := t.entries
	t.mu.Unlock()
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	// Every line is compared, whether or not one matched already.
	found := -1
	for i := range entries {
		if subtle.ConstantTimeCompare(entries[i].sum[:], sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Principal{}, fmt.Errorf("%w: unknown or revoked", ErrBadToken)
	}
	p := entries[found].p
	if !p.Expires.IsZero() && !now.Before(p.Expires) {
		return Principal{}, fmt.Errorf("%w: expired at %s", ErrBadToken, p.Expires.Format(time.RFC3339))
	}
	return p, nil
}
