package slapdtest

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Conn returns a connection bound as the admin, closed when the test ends.
func (s *Server) Conn(t testing.TB) *ldap.Conn {
	t.Helper()
	c, err := s.dialAdmin()
	if err != nil {
		t.Fatalf("slapdtest: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *Server) dialAdmin() (*ldap.Conn, error) {
	c, err := ldap.DialURL(s.url, ldap.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", s.url, err)
	}
	c.SetTimeout(5 * time.Second)
	if err := c.Bind(AdminDN, AdminPassword); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind as %s: %w", AdminDN, err)
	}
	return c, nil
}

// admin runs f on a fresh admin connection; failures are fatal.
func (s *Server) admin(t testing.TB, what string, f func(c *ldap.Conn) error) {
	t.Helper()
	c, err := s.dialAdmin()
	if err != nil {
		t.Fatalf("slapdtest: %s: %v", what, err)
	}
	defer c.Close()
	if err := f(c); err != nil {
		t.Fatalf("slapdtest: %s: %v", what, err)
	}
}

// UserDN is the DN of uid under ou=people.
func UserDN(uid string) string { return "uid=" + ldap.EscapeDN(uid) + "," + PeopleDN }

// GroupDN is the DN of group cn under ou=groups.
func GroupDN(cn string) string { return "cn=" + ldap.EscapeDN(cn) + "," + GroupsDN }

func search(c *ldap.Conn, base string, scope int, filter string, attrs ...string) ([]*ldap.Entry, error) {
	res, err := c.Search(ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, 0, 5, false, filter, attrs, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return res.Entries, nil
}

func entryUUID(c *ldap.Conn, dn string) (string, error) {
	es, err := search(c, dn, ldap.ScopeBaseObject, "(objectClass=*)", "entryUUID")
	if err != nil || len(es) == 0 {
		return "", err
	}
	return es[0].GetAttributeValue("entryUUID"), nil
}

// UUID returns the entryUUID of user uid; fatal if there is none.
func (s *Server) UUID(t testing.TB, uid string) string {
	t.Helper()
	var id string
	s.admin(t, "entryUUID of "+uid, func(c *ldap.Conn) (err error) {
		id, err = entryUUID(c, UserDN(uid))
		if err == nil && id == "" {
			err = fmt.Errorf("no user %s", UserDN(uid))
		}
		return err
	})
	return id
}

// GroupUUID returns the entryUUID of group cn.
func (s *Server) GroupUUID(t testing.TB, cn string) string {
	t.Helper()
	var id string
	s.admin(t, "entryUUID of group "+cn, func(c *ldap.Conn) (err error) {
		id, err = entryUUID(c, GroupDN(cn))
		if err == nil && id == "" {
			err = fmt.Errorf("no group %s", GroupDN(cn))
		}
		return err
	})
	return id
}

// AddUser adds an inetOrgPerson uid with the given mail addresses (the
// first is its main one) and display name.
func (s *Server) AddUser(t testing.TB, uid, displayName string, mails ...string) {
	t.Helper()
	s.admin(t, "add user "+uid, func(c *ldap.Conn) error {
		r := ldap.NewAddRequest(UserDN(uid), nil)
		r.Attribute("objectClass", []string{"inetOrgPerson"})
		r.Attribute("uid", []string{uid})
		r.Attribute("cn", []string{displayName})
		r.Attribute("sn", []string{displayName})
		r.Attribute("displayName", []string{displayName})
		if len(mails) > 0 {
			r.Attribute("mail", mails)
		}
		return c.Add(r)
	})
}

// Rename renames user uid to newUID (modrdn, so the entryUUID stays) and
// replaces all its mail values with newMail; posixGroup memberUid values
// follow. It waits until refint has rewritten the member and roleOccupant
// DNs that pointed at the old DN, and fails if the entryUUID changed.
func (s *Server) Rename(t testing.TB, uid, newUID, newMail string) {
	t.Helper()
	s.admin(t, "rename "+uid, func(c *ldap.Conn) error {
		before, err := entryUUID(c, UserDN(uid))
		if err != nil || before == "" {
			return fmt.Errorf("no user %s (%v)", UserDN(uid), err)
		}
		oldDN := UserDN(uid)
		refFilter := fmt.Sprintf("(|(member=%[1]s)(roleOccupant=%[1]s))", ldap.EscapeFilter(oldDN))
		if newUID != uid {
			if err := c.ModifyDN(ldap.NewModifyDNRequest(oldDN, "uid="+ldap.EscapeDN(newUID), true, "")); err != nil {
				return fmt.Errorf("modrdn: %w", err)
			}
		}
		m := ldap.NewModifyRequest(UserDN(newUID), nil)
		m.Replace("mail", []string{newMail})
		if err := c.Modify(m); err != nil {
			return fmt.Errorf("replace mail: %w", err)
		}
		if newUID != uid {
			groups, err := search(c, GroupsDN, ldap.ScopeWholeSubtree,
				"(&(objectClass=posixGroup)(memberUid="+ldap.EscapeFilter(uid)+"))", "1.1")
			if err != nil {
				return err
			}
			for _, g := range groups {
				gm := ldap.NewModifyRequest(g.DN, nil)
				gm.Delete("memberUid", []string{uid})
				gm.Add("memberUid", []string{newUID})
				if err := c.Modify(gm); err != nil {
					return fmt.Errorf("memberUid of %s: %w", g.DN, err)
				}
			}
			// refint rewrites member DNs in the background after the
			// modrdn has returned.
			deadline := time.Now().Add(10 * time.Second)
			for {
				left, err := search(c, Suffix, ldap.ScopeWholeSubtree, refFilter, "1.1")
				if err != nil {
					return err
				}
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("refint left %d entries pointing at %s", len(left), oldDN)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		after, err := entryUUID(c, UserDN(newUID))
		if err != nil {
			return err
		}
		if after != before {
			return fmt.Errorf("entryUUID changed across the rename: %s -> %s", before, after)
		}
		return nil
	})
}

// AddMember adds user uid to group cn: a member DN for a groupOfNames (and
// a memberUid on its twin cn-posix, if any), a memberUid for a
// posixGroup. Idempotent.
func (s *Server) AddMember(t testing.TB, group, uid string) {
	t.Helper()
	s.changeMember(t, group, uid, true)
}

// DelMember removes user uid from group cn (and its cn-posix twin).
// Idempotent. A groupOfNames must keep at least one member.
func (s *Server) DelMember(t testing.TB, group, uid string) {
	t.Helper()
	s.changeMember(t, group, uid, false)
}

func (s *Server) changeMember(t testing.TB, group, uid string, add bool) {
	t.Helper()
	what := "delete member " + uid + " from " + group
	if add {
		what = "add member " + uid + " to " + group
	}
	s.admin(t, what, func(c *ldap.Conn) error {
		names := []string{group}
		if !strings.HasSuffix(group, "-posix") {
			names = append(names, group+"-posix")
		}
		found := false
		for i, cn := range names {
			es, err := search(c, GroupDN(cn), ldap.ScopeBaseObject, "(objectClass=*)", "objectClass", "member", "memberUid")
			if err != nil {
				return err
			}
			if len(es) == 0 {
				if i == 0 {
					return fmt.Errorf("no group %s", GroupDN(cn))
				}
				continue
			}
			found = true
			e := es[0]
			classes := strings.ToLower(strings.Join(e.GetAttributeValues("objectClass"), " "))
			attr, val := "memberUid", uid
			if strings.Contains(classes, "groupofnames") {
				attr, val = "member", UserDN(uid)
			}
			has := slices.ContainsFunc(e.GetAttributeValues(attr), func(v string) bool { return strings.EqualFold(v, val) })
			if has == add {
				continue
			}
			m := ldap.NewModifyRequest(e.DN, nil)
			if add {
				m.Add(attr, []string{val})
			} else {
				m.Delete(attr, []string{val})
			}
			if err := c.Modify(m); err != nil {
				return fmt.Errorf("%s %s on %s: %w", what, attr, e.DN, err)
			}
		}
		if !found {
			return fmt.Errorf("no group %s", group)
		}
		return nil
	})
}

// Members returns the member DNs of a groupOfNames, or the memberUids of a
// posixGroup.
func (s *Server) Members(t testing.TB, group string) []string {
	t.Helper()
	var out []string
	s.admin(t, "members of "+group, func(c *ldap.Conn) error {
		es, err := search(c, GroupDN(group), ldap.ScopeBaseObject, "(objectClass=*)", "member", "memberUid")
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return fmt.Errorf("no group %s", group)
		}
		out = append(es[0].GetAttributeValues("member"), es[0].GetAttributeValues("memberUid")...)
		return nil
	})
	return out
}
