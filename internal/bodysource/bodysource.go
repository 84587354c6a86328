// Package bodysource holds the command-line flags of where the daemons
// (bonnied, bonnie-relay) read message bodies from, since Cyrus never
// sends them: Cyrus's partition directories (fetch.Spool) and/or IMAP as
// an admin (fetch.IMAP), the spool first. The IMAP flags also serve
// bonnied's periodic reconcile, which connects the same way.
package bodysource

import (
	"crypto/tls"
	"errors"
	"flag"
	"log/slog"
	"os"
	"strings"

	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/imapdial"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Flags are the body source's flags.
type Flags struct {
	Spool       List
	SpoolLegacy bool
	// IMAP is HOST:PORT; the rest is how to log in there.
	IMAP, User, PasswordFile, TLS, CAFile, Authorize string
	Conns                                            int
	spoolFlag                                        string
}

// Register defines the flags on fs: --imap, --imap-user,
// --imap-password-file, --imap-tls, --imap-ca-file, --imap-authorize,
// --imap-conns, and the spool directories as --SPOOLFLAG and
// --SPOOLFLAG-legacy.
func (f *Flags) Register(fs *flag.FlagSet, spoolFlag string) {
	f.spoolFlag = spoolFlag
	fs.Var(&f.Spool, spoolFlag, "read message bodies from this Cyrus partition directory (repeatable; tried before --imap)")
	fs.BoolVar(&f.SpoolLegacy, spoolFlag+"-legacy", false, "also look for pre-3.x name-based spool paths")
	fs.StringVar(&f.IMAP, "imap", "", "fetch message bodies over IMAP (BODY.PEEK[]) from this HOST:PORT")
	fs.StringVar(&f.User, "imap-user", "cyrus", "IMAP user: a Cyrus admin (--imap-authorize owner) or a reader with the r right (self)")
	fs.StringVar(&f.PasswordFile, "imap-password-file", "", "file holding the IMAP password (first line)")
	fs.StringVar(&f.TLS, "imap-tls", "", "none, starttls or tls (default: none on loopback, starttls otherwise)")
	fs.StringVar(&f.CAFile, "imap-ca-file", "", "PEM file of the CA certificates to trust for IMAP TLS instead of the system's")
	fs.StringVar(&f.Authorize, "imap-authorize", "owner", "owner: authorize as each folder's owner (a Cyrus admin may; Cyrus then sends Login/Logout events naming the owner), self: read with --imap-user's own rights")
	fs.IntVar(&f.Conns, "imap-conns", 4, "IMAP connections at most")
}

// Check refuses what cannot work, at start: --imap without a password
// file, a CA file without a PEM certificate.
func (f *Flags) Check() error {
	if f.IMAP != "" && f.PasswordFile == "" {
		return errors.New("--imap needs --imap-password-file")
	}
	_, err := f.TLSConfig()
	return err
}

// Enabled reports whether a body source is given.
func (f *Flags) Enabled() bool { return f.IMAP != "" || len(f.Spool) > 0 }

// TLSConfig is the IMAP clients' TLS configuration: nil for the system
// roots, or trusting only --imap-ca-file's CAs.
func (f *Flags) TLSConfig() (*tls.Config, error) {
	return imapdial.CAConfig("--imap-ca-file", f.CAFile, f.IMAP)
}

// Password reads --imap-password-file, warning when everyone may read it.
func (f *Flags) Password(lg *slog.Logger) (string, error) {
	if fi, err := os.Stat(f.PasswordFile); err == nil && fi.Mode().Perm()&0o004 != 0 && lg != nil {
		lg.Warn("the IMAP password file is readable by everyone", "file", f.PasswordFile)
	}
	return imapdial.ReadPassword("--imap-password-file", f.PasswordFile)
}

// Open returns the fetchers the flags name, in the order they are tried,
// storing into store, their names for the logs, and a function that
// closes them.
func (f *Flags) Open(store *blob.Store, lg *slog.Logger) (chain fetch.Chain, names []string, closeAll func(), err error) {
	closeAll = func() {}
	if len(f.Spool) > 0 {
		sp := &fetch.Spool{Partitions: f.Spool, Legacy: f.SpoolLegacy, Store: store}
		chain = append(chain, sp)
		names = append(names, sp.String())
	}
	if f.IMAP != "" {
		password, err := f.Password(lg)
		if err != nil {
			return nil, nil, nil, err
		}
		tlsConfig, err := f.TLSConfig()
		if err != nil {
			return nil, nil, nil, err
		}
		im, err := fetch.NewIMAP(fetch.IMAPOptions{
			Addr: f.IMAP, TLS: fetch.TLSMode(f.TLS), TLSConfig: tlsConfig, User: f.User, Password: password,
			Authorize: fetch.Authorize(f.Authorize), Conns: f.Conns, Store: store, Logger: lg,
		})
		if err != nil {
			return nil, nil, nil, err
		}
		closeAll = func() { im.Close() }
		chain = append(chain, im)
		names = append(names, im.String())
	}
	return chain, names, closeAll, nil
}

// List is a repeatable, comma-separated flag.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set adds the comma-separated values of s.
func (l *List) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}
