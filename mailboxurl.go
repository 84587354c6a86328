package bonnie

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// ParseMailboxURL parses the RFC 5092 IMAP URL Cyrus puts in an event's
// "uri" and "oldMailboxID":
//
//	imap://host                                      Login, Logout
//	imap://host/user.alice                           QuotaChange (the quota root)
//	imap://host/user.alice.B%C3%BCcher;UIDVALIDITY=n mailbox and flag events
//	imap://host/user.alice;UIDVALIDITY=n/;UID=m      MessageAppend, MessageNew
//	imap://alice@host/INBOX;UIDVALIDITY=n            Cyrus 2.5 (user-relative)
//
// The mailbox name is percent-decoded (Cyrus encodes UTF-8). Owner is
// derived from the name in Cyrus's admin namespace: "user.alice[.sub]" and
// "user/alice[/sub]" (unixhierarchysep) belong to alice, "user.john^doe" to
// john.doe, and with virtual domains both the internal form
// "example.org!user.alice" and the admin form "user.alice@example.org"
// belong to alice@example.org; anything else is a shared folder (Owner "").
// For Cyrus 2.5's user-relative URLs the userinfo is kept in User and owns
// INBOX and personal folders; "Other Users/bob/..." belongs to bob and
// "Shared Folders/..." to nobody (Cyrus's default prefixes: a server with
// other prefixes needs its own mapping).
//
// Errors wrap ErrMalformed.
func ParseMailboxURL(s string) (MailboxURL, error) {
	var u MailboxURL
	const scheme = "imap://"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return u, fmt.Errorf("%w: %q is not an imap:// URL", ErrMalformed, s)
	}
	rest := s[len(scheme):]
	authority, path, hasPath := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo := authority[:i]
		authority = authority[i+1:]
		userinfo, _, _ = strings.Cut(userinfo, ";") // ;AUTH=...
		user, err := url.PathUnescape(userinfo)
		if err != nil {
			return u, fmt.Errorf("%w: user in %q: %v", ErrMalformed, s, err)
		}
		u.User = user
	}
	if authority == "" {
		return u, fmt.Errorf("%w: %q has no server", ErrMalformed, s)
	}
	u.Server = authority
	if !hasPath {
		return u, nil
	}
	path, _, _ = strings.Cut(path, "?") // a search program: not a mailbox part
	mailbox, uidPart, hasUID := strings.Cut(path, "/;")
	name, params, _ := strings.Cut(mailbox, ";")
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, "UIDVALIDITY") {
			n, err := parseNZ32(v)
			if err != nil {
				return u, fmt.Errorf("%w: UIDVALIDITY in %q: %v", ErrMalformed, s, err)
			}
			u.UIDValidity = n
		}
	}
	if hasUID {
		for uidPart != "" {
			var p string
			p, uidPart, _ = strings.Cut(uidPart, ";")
			k, v, _ := strings.Cut(p, "=")
			if strings.EqualFold(k, "UID") {
				n, err := parseNZ32(v)
				if err != nil {
					return u, fmt.Errorf("%w: UID in %q: %v", ErrMalformed, s, err)
				}
				u.UID = n
			}
		}
	}
	decoded, err := url.PathUnescape(name)
	if err != nil {
		return u, fmt.Errorf("%w: mailbox in %q: %v", ErrMalformed, s, err)
	}
	u.Name = decoded
	u.Owner = mailboxOwner(u.Name, u.User)
	return u, nil
}

// parseNZ32 parses an RFC 3501 nz-number that fits a UID or UIDVALIDITY.
func parseNZ32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, err
	}
	if n == 0 || s[0] == '+' {
		return 0, errors.New("not a non-zero number")
	}
	return uint32(n), nil
}

// mailboxOwner derives the user whose personal hierarchy holds the mailbox
// (see ParseMailboxURL); urlUser is the URL's userinfo, if any.
func mailboxOwner(name, urlUser string) string {
	if name == "" {
		return ""
	}
	domain := ""
	if d, rest, ok := strings.Cut(name, "!"); ok {
		// Internal form with virtual domains: "example.org!user.alice".
		domain, name = d, rest
	} else if i := strings.LastIndexByte(name, '@'); i >= 0 && looksLikeDomain(name[i+1:]) {
		// Admin namespace with virtual domains: "user.alice.Work@example.org".
		domain, name = name[i+1:], name[:i]
	}
	withDomain := func(user string) string {
		if user == "" {
			return ""
		}
		if domain != "" && !strings.Contains(user, "@") {
			return user + "@" + domain
		}
		return user
	}
	if user, ok := userComponent(name); ok {
		if user == "" {
			return ""
		}
		if domain == "" && urlUser != "" {
			// Another user's folder seen from a user-relative URL: same
			// domain as the URL's user.
			if _, d, ok := strings.Cut(urlUser, "@"); ok {
				domain = d
			}
		}
		return withDomain(user)
	}
	if urlUser == "" {
		return "" // shared folder in the admin namespace
	}
	// Cyrus 2.5 user-relative names.
	for _, p := range [...]string{"Other Users/", "Other Users."} {
		if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
			user, _, _ := strings.Cut(name[len(p):], p[len(p)-1:])
			if _, d, ok := strings.Cut(urlUser, "@"); ok && !strings.Contains(user, "@") && user != "" {
				return user + "@" + d
			}
			return user
		}
	}
	for _, p := range [...]string{"Shared Folders/", "Shared Folders."} {
		if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) || strings.EqualFold(name, p[:len(p)-1]) {
			return ""
		}
	}
	return urlUser
}

// userComponent returns the user of a "user.NAME..." or "user/NAME..."
// mailbox name; ok is false for a name outside the user hierarchy.
func userComponent(name string) (string, bool) {
	if len(name) < 5 || !strings.EqualFold(name[:4], "user") {
		return "", false
	}
	sep := name[4]
	if sep != '.' && sep != '/' {
		return "", false
	}
	user, _, _ := strings.Cut(name[5:], string(sep))
	if sep == '.' {
		// With the netnews separator Cyrus stores a dot of a user name as
		// '^' ("user.john^doe" is john.doe's).
		user = strings.ReplaceAll(user, "^", ".")
	}
	return user, true
}

// looksLikeDomain tells a virtual-domain suffix ("example.org") from an '@'
// that is part of a folder name: a DNS name with at least one dot.
func looksLikeDomain(s string) bool {
	if s == "" || !strings.Contains(s, ".") || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
