package identity

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bonnie-archive/bonnie"
)

// Config selects and configures a resolver the way the daemons and the
// command line take it: from flags (RegisterFlags) and from a config file
// (LoadConfig) with the same keys, the flags winning. With LDAPURL it is
// the LDAP resolver, with IdentityFile the static one, with neither no
// resolver.
//
// A config file (YAML or JSON) holds the flags' keys and, under "ldap",
// every LDAPOptions field (filters, attributes, pool, timeouts):
//
//	ldap-url: ldap://127.0.0.1:389
//	ldap-bind-dn: cn=bonnie,ou=services,dc=example,dc=org
//	ldap-password-file: /etc/bonnie/ldap.secret
//	ldap-base: dc=example,dc=org
//	default-domain: example.org
//	ldap:
//	  groupFilter: (objectClass=groupOfNames)
//	  requestTimeout: 3s
type Config struct {
	LDAPURL          string        `json:"ldap-url,omitempty" yaml:"ldap-url,omitempty"`
	LDAPBindDN       string        `json:"ldap-bind-dn,omitempty" yaml:"ldap-bind-dn,omitempty"`
	LDAPPasswordFile string        `json:"ldap-password-file,omitempty" yaml:"ldap-password-file,omitempty"`
	LDAPBase         string        `json:"ldap-base,omitempty" yaml:"ldap-base,omitempty"`
	LDAPIDAttr       string        `json:"ldap-id-attr,omitempty" yaml:"ldap-id-attr,omitempty"`
	LDAPLoginAttrs   string        `json:"ldap-login-attrs,omitempty" yaml:"ldap-login-attrs,omitempty"`
	LDAPCacheTTL     time.Duration `json:"ldap-cache-ttl,omitempty" yaml:"ldap-cache-ttl,omitempty"`
	DefaultDomain    string        `json:"default-domain,omitempty" yaml:"default-domain,omitempty"`
	IdentityFile     string        `json:"identity-file,omitempty" yaml:"identity-file,omitempty"`
	// LDAP holds the remaining LDAP settings; the fields above override
	// its URL, BindDN, PasswordFile, BaseDN, IDAttr, LoginAttrs and
	// DefaultDomain.
	LDAP LDAPOptions `json:"ldap,omitzero" yaml:"ldap,omitempty"`
}

// RegisterFlags adds the resolver flags to fs: --ldap-url,
// --ldap-bind-dn, --ldap-password-file, --ldap-base, --ldap-id-attr,
// --ldap-login-attrs, --ldap-cache-ttl, --default-domain and
// --identity-file. (For cobra: pflag's FlagSet.AddGoFlagSet.)
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.LDAPURL, "ldap-url", c.LDAPURL, "resolve identities against this LDAP directory (ldap://HOST:PORT or ldaps://)")
	fs.StringVar(&c.LDAPBindDN, "ldap-bind-dn", c.LDAPBindDN, "bind to the directory as this DN (default: anonymous)")
	fs.StringVar(&c.LDAPPasswordFile, "ldap-password-file", c.LDAPPasswordFile, "file whose first line is the bind password")
	fs.StringVar(&c.LDAPBase, "ldap-base", c.LDAPBase, "base DN under which users and groups are searched")
	fs.StringVar(&c.LDAPIDAttr, "ldap-id-attr", c.LDAPIDAttr, "attribute holding the persistent id (default entryUUID; nsUniqueId on 389-DS)")
	fs.StringVar(&c.LDAPLoginAttrs, "ldap-login-attrs", c.LDAPLoginAttrs, "comma-separated attributes a login matches, the first giving the canonical login (default uid,mail)")
	fs.DurationVar(&c.LDAPCacheTTL, "ldap-cache-ttl", c.LDAPCacheTTL, "how long a directory answer is reused (default 1m)")
	fs.StringVar(&c.DefaultDomain, "default-domain", c.DefaultDomain, "domain of bare logins: alice also matches alice@DOMAIN")
	fs.StringVar(&c.IdentityFile, "identity-file", c.IdentityFile, "resolve identities from this YAML or JSON file instead of LDAP")
}

// LoadConfig reads a config file (YAML or JSON; unknown keys are errors).
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("identity: config %s: %w", path, err)
	}
	return &c, nil
}

// Merge fills in c's empty settings from other (a config file under the
// flags).
func (c *Config) Merge(other *Config) {
	if other == nil {
		return
	}
	or := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	or(&c.LDAPURL, other.LDAPURL)
	or(&c.LDAPBindDN, other.LDAPBindDN)
	or(&c.LDAPPasswordFile, other.LDAPPasswordFile)
	or(&c.LDAPBase, other.LDAPBase)
	or(&c.LDAPIDAttr, other.LDAPIDAttr)
	or(&c.LDAPLoginAttrs, other.LDAPLoginAttrs)
	or(&c.DefaultDomain, other.DefaultDomain)
	or(&c.IdentityFile, other.IdentityFile)
	if c.LDAPCacheTTL == 0 {
		c.LDAPCacheTTL = other.LDAPCacheTTL
	}
	if reflect.ValueOf(c.LDAP).IsZero() {
		c.LDAP = other.LDAP
	}
}

// Enabled reports whether the config names a resolver.
func (c *Config) Enabled() bool {
	return c.LDAPURL != "" || c.LDAP.URL != "" || c.IdentityFile != ""
}

// LDAPOptions returns the LDAP settings: the "ldap" section with the
// flat settings over it.
func (c *Config) LDAPOptions() LDAPOptions {
	o := c.LDAP
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&o.URL, c.LDAPURL)
	set(&o.BindDN, c.LDAPBindDN)
	set(&o.PasswordFile, c.LDAPPasswordFile)
	set(&o.BaseDN, c.LDAPBase)
	set(&o.IDAttr, c.LDAPIDAttr)
	set(&o.DefaultDomain, c.DefaultDomain)
	if c.LDAPLoginAttrs != "" {
		o.LoginAttrs = nil
		for _, a := range strings.Split(c.LDAPLoginAttrs, ",") {
			if a = strings.TrimSpace(a); a != "" {
				o.LoginAttrs = append(o.LoginAttrs, a)
			}
		}
	}
	if c.LDAPCacheTTL > 0 {
		o.Cache.TTL = c.LDAPCacheTTL
	}
	return o
}

// Open returns the configured resolver (nil when none is) and a function
// that releases it.
func (c *Config) Open() (bonnie.Resolver, func() error, error) {
	noop := func() error { return nil }
	ldapURL := c.LDAPURL != "" || c.LDAP.URL != ""
	switch {
	case ldapURL && c.IdentityFile != "":
		return nil, noop, errors.New("identity: give an LDAP URL or an identity file, not both")
	case ldapURL:
		l, err := NewLDAP(c.LDAPOptions())
		if err != nil {
			return nil, noop, err
		}
		return l, l.Close, nil
	case c.IdentityFile != "":
		s, err := LoadStatic(c.IdentityFile)
		if err != nil {
			return nil, noop, err
		}
		s.DefaultDomain = c.DefaultDomain
		return s, noop, nil
	}
	return nil, noop, nil
}
