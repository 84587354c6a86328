package cyrus

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/user"
	"strconv"
	"time"
)

// Sentinel errors. Every error this package returns that has one of these
// causes wraps it, so test with errors.Is.
var (
	// ErrClosed is returned by Subscribe after Close, and reported as the
	// reason of what Close had to give up.
	ErrClosed = errors.New("cyrus: subscriber closed")
	// ErrSubscribed is returned by a second Subscribe while the first
	// subscription is still running: one socket is one stream of
	// notifications, and splitting it between consumers would lose its
	// order.
	ErrSubscribed = errors.New("cyrus: already subscribed")
	// ErrInUse means another process is listening on the socket path. It
	// is never "fixed" by removing the file: that would steal Cyrus's
	// notifications from a running listener.
	ErrInUse = errors.New("cyrus: socket in use by another listener")
	// ErrNotSocket means the path exists and is not a socket. Such a file
	// is never deleted.
	ErrNotSocket = errors.New("cyrus: path exists and is not a socket")
	// ErrActivation means socket activation was asked for and no
	// suitable inherited socket was found (wrong type, wrong path, not
	// listening, unknown name).
	ErrActivation = errors.New("cyrus: no suitable activated socket")
	// ErrTooLarge means a notification was larger than the configured
	// limit; what was read is still handed over (OnGiveUp or the caller).
	ErrTooLarge = errors.New("cyrus: notification too large")
	// ErrMalformed means input that cannot be framed as a notification
	// (a dlist request that is not one, external-notifier arguments Cyrus
	// does not produce).
	ErrMalformed = errors.New("cyrus: malformed notification")
)

// Framing values set in the MetaFraming metadata and returned by
// ReadExternal. They are the string values of bonnie.Framing (this package
// does not import the root package, so that a relay can use it without the
// engine).
const (
	FramingDatagram = "datagram" // notifysocket: PATH
	FramingDList    = "dlist"    // notifysocket: dlist:PATH
	FramingJSON     = "json"     // bare RFC 5423 JSON (external notifier)
)

// Metadata keys set on every delivered message. Values are strings, as
// Watermill metadata requires.
const (
	// MetaSource is Options.Source; the same key as bonnie.MetaSource, so
	// the engine files dead letters under it.
	MetaSource = "bonnie.source"
	// MetaFraming is FramingDatagram, FramingDList or FramingJSON.
	MetaFraming = "bonnie.framing"
	// MetaPeerUID, MetaPeerGID and MetaPeerPID are the sender's
	// credentials as the kernel reported them (SO_PEERCRED or
	// SCM_CREDENTIALS): who wrote the notification, kept as evidence.
	MetaPeerUID = "bonnie.peer_uid"
	MetaPeerGID = "bonnie.peer_gid"
	MetaPeerPID = "bonnie.peer_pid"
	// MetaReceived is when the notification was read, UTC, RFC 3339 with
	// nanoseconds.
	MetaReceived = "bonnie.received"
	// MetaSize is the notification's size on the wire in bytes. For a
	// truncated datagram it is larger than the payload.
	MetaSize = "bonnie.size"
	// MetaTruncated is "true" when the payload is shorter than what was
	// sent (a datagram over MaxDatagramSize); absent otherwise.
	MetaTruncated = "bonnie.truncated"
	// MetaAttempt is the delivery attempt, "1" first, "2" after one Nack...
	MetaAttempt = "bonnie.attempt"
)

// Defaults used for zero Options fields.
const (
	DefaultSource             = "cyrus"
	DefaultCyrusUser          = "cyrus"
	DefaultQueueSize          = 4096
	DefaultMaxRedeliveries    = 5
	DefaultRedeliveryDelay    = 100 * time.Millisecond
	DefaultMaxRedeliveryDelay = 10 * time.Second
	DefaultMaxDatagramSize    = 65536
	DefaultMaxRequestSize     = 1 << 20
	DefaultMaxConnections     = 256
	DefaultDListInFlight      = 32
	DefaultRequestTimeout     = 30 * time.Second
	DefaultDrainTimeout       = 30 * time.Second
)

// Hook receives a notification this package will not hand to the
// subscriber (OnGiveUp) or must not (OnReject), with its raw bytes and a
// human-readable reason. The engine stores it as a dead letter, which is
// what keeps invariant 6 ("never silently dropped"). A hook may block; it
// runs on the subscriber's goroutines and delays what follows, which is
// back-pressure, not loss. ctx is not cancelled by Close.
type Hook func(ctx context.Context, raw []byte, reason string)

// Options configure the subscribers. Zero values mean the documented
// defaults; the same struct serves DatagramSubscriber, DListSubscriber and
// ExternalSubscriber, each ignoring what does not concern it.
type Options struct {
	// Path is the socket file: the value of Cyrus's notifysocket without
	// the "dlist:" prefix. At most 107 bytes (sun_path). Required unless
	// the socket comes from Activated or a *FromConn/*FromListener
	// constructor; with Activated it selects the inherited socket bound
	// to this path.
	Path string

	// Activated, when not nil, supplies the socket instead of creating
	// one: a socket inherited from systemd (or systemd-socket-activate),
	// so that it outlives this process and Cyrus keeps writing to the
	// kernel queue (datagram) or the listen backlog (dlist) while the
	// daemon restarts. See Activation.
	Activated *Activated
	// ActivationName picks the inherited socket by its
	// FileDescriptorName= (LISTEN_FDNAMES). Empty: by Path, or the only
	// socket of the right type.
	ActivationName string

	// Source names this listener in metadata (MetaSource), logs and
	// dead letters. Default "cyrus".
	Source string
	// Logger receives the subscriber's logs. Default slog.Default().
	Logger *slog.Logger

	// AllowedUsers and AllowedUIDs are the senders whose notifications are
	// delivered; anything else goes to OnReject, because a notification
	// forged by another local user would be false evidence. Users are
	// looked up when the subscriber is created. When both are empty the
	// default is the user "cyrus". The process's own uid (root included)
	// is allowed only when listed.
	AllowedUsers []string
	AllowedUIDs  []int

	// SocketUser, SocketGroup and SocketMode set the owner, group and
	// permissions of a socket file this package creates, so that Cyrus
	// (which connects as SocketUser) can write to it and nobody else can.
	// Defaults: SocketUser "cyrus"; SocketMode 0600 without SocketGroup,
	// 0660 with it. Running as root the file is chowned to SocketUser
	// (and SocketGroup, else the user's primary group). Not running as
	// root and not as SocketUser, the file cannot be given away: it is
	// chgrp'ed to SocketGroup (default: SocketUser's primary group, of
	// which this process must be a member) and made 0660 (or SocketMode).
	// Every parent directory must be searchable by SocketUser; this
	// package warns when it is not and changes no directory.
	SocketUser  string
	SocketGroup string
	SocketMode  fs.FileMode

	// QueueSize bounds the notifications read and not yet delivered
	// (default 4096). Datagrams are read into it as fast as the kernel
	// gives them, so that Cyrus (whose kernel queue holds about 10) does
	// not block; when it is full the reader waits, which blocks Cyrus's
	// sendto: back-pressure, nothing dropped. Worst-case memory is
	// QueueSize × MaxDatagramSize (Cyrus's events are usually under 2 KiB).
	QueueSize int
	// MaxInFlight is how many messages may be handed out and not yet
	// acknowledged. Messages are always handed out in the order they were
	// read (only a redelivery after a Nack comes later), so a consumer
	// that processes them in order, as bonnie.Engine does, keeps Cyrus's
	// order with many in flight and can commit them together. A Watermill
	// Router handles each message on its own goroutine and does not keep
	// that order: with a Router, leave the datagram default of 1 (the
	// kernel's arrival order is the only order there is). Default 1 for
	// datagrams and 32 for dlist (each Cyrus process waits for its own
	// reply, so connections are independent, and one slow event must not
	// stall every IMAP session).
	MaxInFlight int
	// MaxRedeliveries is how many times a Nacked message is delivered
	// again before the subscriber gives up on it (OnGiveUp; dlist replies
	// NO). 0 means 5; negative means never give up (redeliver forever,
	// holding Cyrus).
	MaxRedeliveries int
	// RedeliveryDelay is the wait after the first Nack, doubled after each
	// further one up to MaxRedeliveryDelay (defaults 100ms and 10s). The
	// message keeps its slot meanwhile: Cyrus is held, nothing is lost.
	RedeliveryDelay    time.Duration
	MaxRedeliveryDelay time.Duration

	// MaxDatagramSize is the largest datagram payload kept (default
	// 65536, Cyrus's own limit). A larger datagram is delivered truncated,
	// with MetaTruncated and its real MetaSize.
	MaxDatagramSize int
	// MaxRequestSize is the largest dlist request accepted (default
	// 1 MiB). A larger one is answered NO and given up with the bytes read.
	MaxRequestSize int
	// MaxConnections bounds the dlist connections served at once (default
	// 256); further ones wait in the kernel's listen backlog.
	MaxConnections int
	// RequestTimeout bounds reading one dlist request (default 30s). Cyrus
	// writes it at once; a connection that stays silent is given up.
	RequestTimeout time.Duration
	// DrainTimeout bounds Close: how long it keeps delivering what was
	// already read and waits for acknowledgements (default 30s). What is
	// still unacknowledged then is given up.
	DrainTimeout time.Duration

	// OnGiveUp receives a notification that was read but will not be
	// acknowledged: Nacked more than MaxRedeliveries times, oversized or
	// truncated dlist requests, a connection closed mid-request, or
	// whatever Close could not deliver. Default: logged with its bytes.
	OnGiveUp Hook
	// OnReject receives a notification from a sender that is not allowed
	// (or a datagram without credentials). It is never delivered.
	// Default: logged with its bytes.
	OnReject Hook
}

// config is Options resolved: defaults applied, users looked up.
type config struct {
	Options
	allowed  map[uint32]bool
	maxRedel int // <0: unlimited
}

func (o Options) resolve(inFlight int) (*config, error) {
	c := &config{Options: o}
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = c.Logger.With("source", c.Source)
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = inFlight
	}
	switch {
	case c.MaxRedeliveries == 0:
		c.maxRedel = DefaultMaxRedeliveries
	case c.MaxRedeliveries < 0:
		c.maxRedel = -1
	default:
		c.maxRedel = c.MaxRedeliveries
	}
	if c.RedeliveryDelay <= 0 {
		c.RedeliveryDelay = DefaultRedeliveryDelay
	}
	if c.MaxRedeliveryDelay <= 0 {
		c.MaxRedeliveryDelay = DefaultMaxRedeliveryDelay
	}
	if c.MaxRedeliveryDelay < c.RedeliveryDelay {
		c.MaxRedeliveryDelay = c.RedeliveryDelay
	}
	if c.MaxDatagramSize <= 0 {
		c.MaxDatagramSize = DefaultMaxDatagramSize
	}
	if c.MaxRequestSize <= 0 {
		c.MaxRequestSize = DefaultMaxRequestSize
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.SocketUser == "" {
		c.SocketUser = DefaultCyrusUser
	}
	if c.OnGiveUp == nil {
		c.OnGiveUp = logHook(c.Logger, "notification given up (no OnGiveUp hook)")
	}
	if c.OnReject == nil {
		c.OnReject = logHook(c.Logger, "notification rejected (no OnReject hook)")
	}

	c.allowed = make(map[uint32]bool)
	names := c.AllowedUsers
	if len(names) == 0 && len(c.AllowedUIDs) == 0 {
		names = []string{DefaultCyrusUser}
	}
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			return nil, fmt.Errorf("cyrus: allowed sender %q: %w", n, err)
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("cyrus: allowed sender %q: uid %q: %w", n, u.Uid, err)
		}
		c.allowed[uint32(uid)] = true
	}
	for _, uid := range c.AllowedUIDs {
		if uid < 0 {
			return nil, fmt.Errorf("cyrus: allowed uid %d is negative", uid)
		}
		c.allowed[uint32(uid)] = true
	}
	return c, nil
}

// logHook is the default hook: it keeps the bytes in the log, which is
// better than nothing when nobody stores dead letters.
func logHook(log *slog.Logger, msg string) Hook {
	return func(ctx context.Context, raw []byte, reason string) {
		const max = 8192
		shown := raw
		if len(shown) > max {
			shown = shown[:max]
		}
		log.ErrorContext(ctx, msg, "reason", reason, "bytes", len(raw), "raw", string(shown))
	}
}
