package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/imapdial"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/sink/backup"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// imapFlags are restore's flags for an IMAP target.
type imapFlags struct {
	user, passwordFile, authorize, into, caFile string
	startTLS                                    bool
	window                                      int
}

func newRestoreCmd(g *globals) *cobra.Command {
	var (
		q       backup.Query
		at, to  string
		nonRecu bool
		asJSON  bool
		withACL bool
		im      imapFlags
	)
	cmd := &cobra.Command{
		Use:   "restore (--mailbox NAME | --message MESSAGE-ID) [--at TIME] --to maildir:DIR|mbox:FILE|imap://HOST:PORT",
		Short: "Restore folders or a message as they were at a time, from the log and the body store",
		Long: `Computes from the log what a folder held at --at (now without it): the folder
named so then in Cyrus's admin namespace, decoded (user.alice.Archiv 2027), or
by its uniqueid (a folder renamed since is found by its old name), with the
folders under it for a mailbox such as user.alice (--exact: only that one),
its messages present then with the owner's flags then (--seen-as USER: \Seen
as USER saw it on a shared folder), and writes their exact bytes from
DIR/blobs:

  maildir:DIR        Maildir++: the mailbox in DIR, folders under it in DIR/.Sub.Folder,
                     each message cur/<sha256>:2,<flags> dated its internal date;
                     running again adds nothing twice (flags are brought to --at)
  mbox:FILE          one mboxrd file, replaced atomically
  imap://HOST:PORT   APPEND into an IMAP server with the flags and internal date,
  imaps://HOST:PORT  creating missing folders; --user/--password-file log in,
                     --authorize USER acts as USER (a Cyrus admin may: restore
                     as the target folder's owner, \Seen is per user); --into
                     FOLDER restores the mailbox into FOLDER (folders under it
                     below FOLDER). A message whose SHA-256 the target folder
                     already holds is not appended again (its flags are brought
                     to --at), so a re-run, or a run after an interruption,
                     completes the restore without duplicates. imap:// is plain
                     text on loopback and STARTTLS elsewhere (--starttls forces it).
                     --acl also gives each folder the rights others had on it
                     at --at (SETACL per identifier, replacing that identifier's
                     rights; others are left alone; the owner's entry is the
                     target's)

A restore into IMAP shows its progress on a terminal; interrupted (Ctrl-C), it
stops between commands and says what it did, and running it again resumes.
Messages whose body is missing are listed with the reason; the exit status is
then 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.Mailbox == "" && q.MessageID == "" {
				return errors.New("restore: --mailbox or --message is needed")
			}
			if at != "" {
				t, err := parseTime(at)
				if err != nil {
					return err
				}
				q.At = t
			}
			q.Recursive = !nonRecu
			kind, dest, ok := strings.Cut(to, ":")
			var iopts backup.IMAPOptions
			switch {
			case !ok || dest == "":
				return fmt.Errorf("restore: --to %q: want maildir:DIR, mbox:FILE or imap://HOST:PORT", to)
			case kind == "imap" || kind == "imaps":
				var err error
				if iopts, err = im.options(to); err != nil {
					return err
				}
			case kind == "maildir" || kind == "mbox":
				if im.user != "" || im.into != "" {
					return errors.New("restore: --user and --into are for an imap:// target")
				}
			default:
				return fmt.Errorf("restore: --to %q: want maildir:DIR, mbox:FILE or imap://HOST:PORT", to)
			}
			ctx := cmd.Context()
			blobsDir, _ := archive.Paths(g.data)
			if _, err := os.Stat(blobsDir); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no body store at %s (bonnied --data %s --sinks archive creates it)", blobsDir, g.data)
			}
			opts, err := blobOptions(nil) // $BONNIE_KEY_FILE for encrypted bodies
			if err != nil {
				return err
			}
			store, err := blob.Open(blobsDir, opts...)
			if err != nil {
				return err
			}
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			items, err := backup.Plan(ctx, lg, q)
			if err != nil {
				return err
			}
			// Folders are written relative to the mailbox's name at --at,
			// also when it was given by uniqueid.
			mailbox := q.Mailbox
			if mailbox != "" {
				fs, err := backup.Folders(ctx, lg, mailbox, false, q.At)
				if err != nil {
					return err
				}
				if len(fs) == 1 {
					mailbox = fs[0].Path
				}
			}
			iopts.Mailbox = mailbox
			if withACL {
				if kind != "imap" && kind != "imaps" {
					return errors.New("restore: --acl is for an imap:// target")
				}
				var folders []string
				for _, it := range items {
					folders = append(folders, it.Folder)
				}
				if iopts.ACLs, err = backup.FolderACLs(ctx, lg, folders, q.At); err != nil {
					return err
				}
			}
			var rep backup.Report
			start := time.Now()
			switch kind {
			case "maildir":
				rep, err = backup.WriteMaildir(ctx, items, store, dest, mailbox)
			case "mbox":
				rep, err = backup.WriteMbox(ctx, items, store, dest)
			default:
				var bar *progressbar.ProgressBar
				iopts.Progress = func(done, total int) {
					if bar == nil && done == 1 {
						bar = newBar(cmd.ErrOrStderr(), int64(total), "restoring", false)
					}
					if bar != nil {
						bar.Set(done)
					}
				}
				rep, err = backup.WriteIMAP(ctx, items, store, iopts)
				if bar != nil {
					bar.Finish()
					fmt.Fprintln(cmd.ErrOrStderr())
				}
			}
			elapsed := time.Since(start)
			if err != nil {
				// Say what was done before the failure: a re-run resumes.
				fmt.Fprintf(cmd.ErrOrStderr(), "restore stopped after %d written, %d already there, %d flags updated; running it again resumes\n",
					rep.Written, rep.Kept, rep.Updated)
				return err
			}
			when := "now"
			if !q.At.IsZero() {
				when = q.At.Format(time.RFC3339Nano)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if rep.Missing == nil {
					rep.Missing = []backup.Missing{}
				}
				if err := enc.Encode(restoreJSON{At: when, To: redactURL(to), Messages: len(items), Seconds: elapsed.Seconds(), Report: rep}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "restored as of %s to %s: %d folders (%d created), %d messages: %d written, %d already there, %d flags updated, %d duplicate bodies, %d missing\n",
					when, redactURL(to), rep.Folders, rep.Created, len(items), rep.Written, rep.Kept, rep.Updated, rep.Duplicates, len(rep.Missing))
				if withACL {
					fmt.Fprintf(out, "access rights set: %d\n", rep.ACLs)
				}
				for _, m := range rep.Missing {
					fmt.Fprintf(out, "missing: %s UID %d %s: %s\n", m.Item.Path, m.Item.UID, m.Item.MessageID, m.Reason)
				}
			}
			if len(rep.Missing) > 0 {
				return &exitError{msg: fmt.Sprintf("%d messages could not be restored", len(rep.Missing))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Mailbox, "mailbox", "", "folder name at --at, admin namespace (user.alice.Work), or its uniqueid")
	f.BoolVar(&nonRecu, "exact", false, "only that folder, not the folders under it")
	f.StringVar(&q.MessageID, "message", "", "only the messages with this Message-ID (<...>)")
	f.StringVar(&at, "at", "", "the moment to restore (RFC 3339 or a date, UTC); default now")
	f.StringVar(&to, "to", "", "maildir:DIR, mbox:FILE, imap://HOST:PORT or imaps://HOST:PORT")
	f.StringVar(&q.SeenAs, "seen-as", "", "restore \\Seen as this user saw it (default: the folder's owner)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&im.user, "user", "", "IMAP: the user to log in as (a Cyrus admin with --authorize)")
	f.StringVar(&im.passwordFile, "password-file", "", "IMAP: file holding the password (first line)")
	f.StringVar(&im.authorize, "authorize", "", "IMAP: act as this user (SASL PLAIN authorization identity; the target folders' owner)")
	f.StringVar(&im.into, "into", "", "IMAP: restore into this folder (admin namespace, or INBOX... of the session's user)")
	f.BoolVar(&im.startTLS, "starttls", false, "IMAP: use STARTTLS even on loopback (imaps:// for TLS from the start)")
	f.StringVar(&im.caFile, "ca-file", "", "IMAP: PEM file of the CA certificates to trust instead of the system's")
	f.IntVar(&im.window, "window", 8, "IMAP: APPENDs sent ahead of their answers")
	f.BoolVar(&withACL, "acl", false, "IMAP: also give each restored folder the rights others had on it at --at (SETACL; the owner's own entry is left to the target)")
	return cmd
}

// restoreJSON is what restore --json prints.
type restoreJSON struct {
	At       string  `json:"at"`
	To       string  `json:"to"`
	Messages int     `json:"messages"`
	Seconds  float64 `json:"seconds"`
	backup.Report
}

// options turns the flags and an imap:// or imaps:// URL into WriteIMAP's
// options.
func (im imapFlags) options(to string) (backup.IMAPOptions, error) {
	u, err := url.Parse(to)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return backup.IMAPOptions{}, fmt.Errorf("restore: --to %q: want imap://HOST:PORT or imaps://HOST:PORT", to)
	}
	o := backup.IMAPOptions{Addr: u.Host, Into: im.into, AuthorizeAs: im.authorize, Window: im.window}
	if u.Port() == "" {
		o.Addr = u.Host + ":143"
		if u.Scheme == "imaps" {
			o.Addr = u.Host + ":993"
		}
	}
	switch {
	case u.Scheme == "imaps":
		o.TLS = fetch.TLSImplicit
	case im.startTLS:
		o.TLS = fetch.TLSStartTLS
	}
	o.User = im.user
	if u.User != nil && o.User == "" {
		o.User = u.User.Username()
	}
	if o.User == "" || im.passwordFile == "" {
		return o, errors.New("restore: an IMAP target needs --user and --password-file")
	}
	pw, err := imapdial.ReadPassword("--password-file", im.passwordFile)
	if err != nil {
		return o, fmt.Errorf("restore: %w", err)
	}
	o.Password = pw
	if im.caFile != "" {
		cfg, err := imapdial.CAConfig("--ca-file", im.caFile, u.Hostname())
		if err != nil {
			return o, fmt.Errorf("restore: %w", err)
		}
		o.TLSConfig = cfg
	}
	return o, nil
}

// redactURL drops a password from an imap:// URL for printing.
func redactURL(to string) string {
	if u, err := url.Parse(to); err == nil && u.User != nil {
		return u.Redacted()
	}
	return to
}
