package cyrus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ExternalMethod is the method written into the datagram framing that
// ReadExternal builds: Cyrus's notifyd runs the external program for the
// notify method "external" (event_notifier: external, mailnotifier:
// external, a Sieve notify :method "external"), or for a request with an
// empty method when notifyd was started with "-m external".
const ExternalMethod = "external"

// ReadExternal turns one invocation of an external notifier into bytes
// the root decoder accepts.
//
// How Cyrus runs it (notifyd/notify_external.c, cyrus-imapd 3.x): imapd
// and lmtpd send their notification to notifyd's socket; notifyd, for the
// method "external", runs the program named by imapd.conf's
// notify_external with execv (no shell, no PATH lookup, as the cyrus
// user, with notifyd's environment):
//
//	PROGRAM -c CLASS -p PRIORITY -u USER -m MAILBOX -f FNAME
//
// where "-f FNAME" is only "-f" when the notification has no file name
// (class EVENT and MAIL never have one; argv stops after "-f"). Empty
// fields (EVENT's priority, user and mailbox) are empty arguments. The
// notification's options (a Sieve notify's :options) are not passed.
// The message is written to the program's stdin followed by one "\n",
// then stdin is closed; notifyd waits for the program to exit (it is run
// once per notification, one at a time) and ignores its exit status and
// output.
//
// args are the program's arguments without the program name
// (os.Args[1:]); at most max bytes (default 1 MiB) are read from stdin.
// The trailing "\n" notify_external adds is removed, restoring the
// message Cyrus sent.
//
// The result: for class EVENT (or no -c at all) whose message is valid
// JSON, the JSON bytes themselves, framing FramingJSON. Otherwise (MAIL,
// SIEVE, anything else) the notification is rebuilt in the datagram
// framing Cyrus's notify socket uses,
//
//	"external" NUL class NUL priority NUL user NUL mailbox NUL "0" NUL message NUL [fname NUL]
//
// framing FramingDatagram, so that class MAIL keeps its user and mailbox
// and SIEVE its priority and file name. nopt is 0 because the options
// never reach the program; such raw bytes therefore differ from the
// datagram Cyrus would have sent to a notify socket directly.
//
// On error (arguments Cyrus does not produce, a message over max, a NUL
// in the message) raw still holds what was read from stdin (at most max
// bytes), so that the caller can keep it as a dead letter, and the error
// wraps ErrMalformed or ErrTooLarge.
func ReadExternal(args []string, stdin io.Reader, max int) (raw []byte, framing string, err error) {
	if max <= 0 {
		max = DefaultMaxRequestSize
	}
	// notify_external adds one "\n", so max+1 bytes may still be a
	// message of max bytes; read one more to detect anything larger.
	data, rerr := io.ReadAll(io.LimitReader(stdin, int64(max)+2))
	if rerr != nil {
		return data, "", fmt.Errorf("cyrus: reading the external notification: %w", rerr)
	}
	msg := bytes.TrimSuffix(data, []byte("\n"))
	if len(msg) > max {
		return data[:max], "", fmt.Errorf("cyrus: external notification over %d bytes: %w", max, ErrTooLarge)
	}

	inv, perr := parseExternalArgs(args)
	if perr != nil {
		return msg, "", perr
	}
	if (inv.class == "EVENT" || !inv.hasClass) && json.Valid(msg) && bytes.HasPrefix(bytes.TrimLeft(msg, " \t\r\n"), []byte("{")) {
		return msg, FramingJSON, nil
	}
	if bytes.IndexByte(msg, 0) >= 0 {
		return msg, "", fmt.Errorf("cyrus: external notification message contains a NUL byte: %w", ErrMalformed)
	}
	for _, f := range []string{inv.class, inv.priority, inv.user, inv.mailbox, inv.fname} {
		if strings.IndexByte(f, 0) >= 0 { // impossible in argv; kept for callers passing other slices
			return msg, "", fmt.Errorf("cyrus: external notifier argument contains a NUL byte: %w", ErrMalformed)
		}
	}
	var b bytes.Buffer
	for _, f := range []string{ExternalMethod, inv.class, inv.priority, inv.user, inv.mailbox, "0"} {
		b.WriteString(f)
		b.WriteByte(0)
	}
	b.Write(msg)
	b.WriteByte(0)
	if inv.hasFname {
		b.WriteString(inv.fname)
		b.WriteByte(0)
	}
	return b.Bytes(), FramingDatagram, nil
}

type externalArgs struct {
	class, priority, user, mailbox, fname string
	hasClass, hasFname                    bool
}

// parseExternalArgs reads notify_external's "-c C -p P -u U -m M -f F".
// It is deliberately not getopt: values may be empty or start with '-'
// (a user name can), so every flag takes the next argument as its value,
// whatever it looks like; only "-f" may end the list without a value.
func parseExternalArgs(args []string) (externalArgs, error) {
	var a externalArgs
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		flag := args[i]
		if len(flag) != 2 || flag[0] != '-' || !strings.ContainsRune("cpumf", rune(flag[1])) {
			return a, fmt.Errorf("cyrus: external notifier argument %d %q: want -c, -p, -u, -m or -f: %w", i+1, flag, ErrMalformed)
		}
		if seen[flag] {
			return a, fmt.Errorf("cyrus: external notifier argument %q given twice: %w", flag, ErrMalformed)
		}
		seen[flag] = true
		if i+1 >= len(args) {
			if flag == "-f" { // no file name: argv ends here
				break
			}
			return a, fmt.Errorf("cyrus: external notifier argument %q has no value: %w", flag, ErrMalformed)
		}
		i++
		v := args[i]
		switch flag {
		case "-c":
			a.class, a.hasClass = v, true
		case "-p":
			a.priority = v
		case "-u":
			a.user = v
		case "-m":
			a.mailbox = v
		case "-f":
			a.fname, a.hasFname = v, true
		}
	}
	return a, nil
}

// ExternalSubscriber delivers the single notification of one external
// notifier invocation as a Watermill message, with the same Ack, Nack,
// redelivery and OnGiveUp rules as the socket subscribers. A program run
// by Cyrus's notifyd reads its notification with ReadExternal, wraps it
// here, runs a Router until Done is closed, and exits: notifyd waits for
// it, so the notification is durable before the next one is passed.
type ExternalSubscriber struct {
	hub  *hub
	done chan struct{}
	once sync.Once
	err  error
	mu   sync.Mutex
}

// NewExternalSubscriber wraps raw (as returned by ReadExternal, with its
// framing) in a subscriber that yields exactly one message. Its metadata
// names the invoking process (notifyd: MetaPeerPID is the parent pid,
// MetaPeerUID this process's uid, as notifyd runs it as the cyrus user).
// No sender check applies: whoever can run this program chose to.
func NewExternalSubscriber(raw []byte, framing string, opts Options) (*ExternalSubscriber, error) {
	if len(opts.AllowedUsers) == 0 && len(opts.AllowedUIDs) == 0 {
		// No socket, no sender to check: do not require a "cyrus" user.
		opts.AllowedUIDs = []int{os.Getuid()}
	}
	cfg, err := opts.resolve(1)
	if err != nil {
		return nil, err
	}
	cfg.MaxInFlight = 1
	s := &ExternalSubscriber{done: make(chan struct{})}
	s.hub = newHub(cfg)
	if framing == "" {
		framing = FramingDatagram
	}
	it := newItem(raw, framing, cfg.Source, time.Now())
	it.meta[MetaPeerPID] = strconv.Itoa(os.Getppid())
	it.meta[MetaPeerUID] = strconv.Itoa(os.Getuid())
	it.meta[MetaPeerGID] = strconv.Itoa(os.Getgid())
	it.desc = fmt.Sprintf("external notification of %d bytes", len(raw))
	it.finish = func(ok bool, reason string) {
		s.once.Do(func() {
			if !ok {
				s.mu.Lock()
				s.err = fmt.Errorf("cyrus: %s", reason)
				s.mu.Unlock()
			}
			close(s.done)
		})
	}
	s.hub.queue <- it // QueueSize >= 1
	return s, nil
}

// Subscribe returns the channel the one message is delivered on; topic is
// ignored.
func (s *ExternalSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.hub.subscribe(ctx)
}

// Done is closed when the message was acknowledged or given up.
func (s *ExternalSubscriber) Done() <-chan struct{} { return s.done }

// Err returns nil once the message was acknowledged, the reason it was
// given up otherwise (and before Done is closed, nil).
func (s *ExternalSubscriber) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close delivers the message if a subscription runs and it is not done
// yet, waiting up to Options.DrainTimeout, gives it up otherwise and
// closes the subscription's channel.
func (s *ExternalSubscriber) Close() error {
	s.hub.close(func() {})
	return nil
}
