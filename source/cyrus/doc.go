// Package cyrus receives Cyrus IMAP's event notifications and hands them,
// byte for byte, to Watermill as messages, so that Bonnie's engine can
// make each one durable before it is acknowledged.
//
// Cyrus has three ways of telling the world what happened, and each has a
// subscriber here (all implement message.Subscriber):
//
//   - DatagramSubscriber: imapd.conf `notifysocket: /run/bonnie/notify`.
//     One AF_UNIX datagram per notification, fire and forget. Cyrus blocks
//     only when the kernel queue (about 10 datagrams) is full, so a
//     dedicated goroutine reads as fast as it can into a bounded queue and
//     stops reading only when that queue is full: back-pressure, never
//     loss. Events lost are those Cyrus sends while nobody has the socket
//     open; socket activation (below) closes that gap.
//   - DListSubscriber: `notifysocket: dlist:/run/bonnie/notify-dlist`.
//     One stream connection per notification; Cyrus waits for a reply.
//     The reply is "OK NIL" only once the message is Acked, so an event
//     is never acknowledged to Cyrus before it is durable.
//   - ExternalSubscriber and ReadExternal: `notify_external: /path/prog`
//     with notifyd and the method "external"; one process per
//     notification, message on stdin.
//
// Payloads are the notification exactly as received (invariant 4: the raw
// bytes are evidence; decoding is the root package's job, and what it
// cannot decode it keeps as a dead letter). Metadata (MetaFraming,
// MetaPeerUID, MetaPeerPID, MetaReceived, ...) say how it came and from
// whom.
//
// # Acknowledgement
//
// Ack means "durable". Nack means "try again": the same message (same
// UUID, MetaAttempt incremented) is delivered again after
// Options.RedeliveryDelay, doubling up to MaxRedeliveryDelay, while the
// notification keeps its place (its Cyrus connection, or its slot in the
// queue): Cyrus slows down instead of losing events. After
// Options.MaxRedeliveries Nacks the subscriber gives up: the bytes go to
// Options.OnGiveUp (the engine keeps them as a dead letter) and a dlist
// peer is answered NO. Nothing read from Cyrus is ever dropped without
// passing through the subscriber, OnGiveUp or OnReject.
//
// # Senders
//
// A notification written by anyone but Cyrus would be false evidence. The
// kernel tells who wrote each one (SO_PEERCRED on a connection,
// SCM_CREDENTIALS on a datagram); only Options.AllowedUsers/AllowedUIDs
// (default: the user "cyrus") are delivered, anything else goes to
// Options.OnReject.
//
// # The socket file
//
// Cyrus connects as its own user (usually "cyrus"): the socket must be
// writable by it and every parent directory searchable by it, and nobody
// else should be able to write. When the subscriber creates the socket
// (Options.Path) it does so atomically with mode 0600 and then gives it to
// Options.SocketUser (running as root), or shares it through
// Options.SocketGroup with mode 0660 (not running as root: this process
// must belong to that group, e.g. `usermod -aG mail bonnie` when Cyrus's
// primary group is mail). Parent directories are never changed; a
// directory such as /run/bonnie should be created 0755 (or 0750 with
// Cyrus's group) by the service manager (systemd RuntimeDirectory=). A
// stale socket file left by a crash is replaced, a live one gives
// ErrInUse, a non-socket file gives ErrNotSocket; Close removes the file
// it created, if it is still the same file.
//
// # Socket activation
//
// A socket owned by the daemon disappears while it restarts, and Cyrus
// loses what it sends meanwhile. A socket held by systemd survives: Cyrus
// keeps writing into the kernel queue (datagram) or the listen backlog
// (dlist) and the next daemon reads it. Example units:
//
//	# bonnie-notify.socket
//	[Socket]
//	ListenDatagram=/run/bonnie/notify
//	ListenStream=/run/bonnie/notify-dlist
//	SocketUser=cyrus
//	SocketMode=0600
//	PassCredentials=yes
//	DirectoryMode=0755
//
//	# bonnie.service: Requires=bonnie-notify.socket
//
// PassCredentials=yes matters: the kernel records a datagram sender's
// credentials only if the socket asks for them when the datagram is sent,
// and datagrams queued while no daemon runs would otherwise arrive
// without them and be rejected.
//
// and in the daemon:
//
//	act := cyrus.Activation()
//	dg, err := cyrus.NewDatagramSubscriber(cyrus.Options{Path: "/run/bonnie/notify", Activated: act})
//	dl, err := cyrus.NewDListSubscriber(cyrus.Options{Path: "/run/bonnie/notify-dlist", Activated: act})
//
// The holder must outlive the daemon for this to help: systemd's .socket
// unit does. Debian's `systemd-socket-activate --datagram -l PATH
// bonnied` passes a socket the same way (handy to try it out), but it
// execs the daemon in its own process, so that socket dies with the
// daemon. Any supervisor that binds the socket, keeps it open and starts
// the daemon with LISTEN_FDS/LISTEN_PID (or hands it to
// NewDatagramSubscriberFromConn / NewDListSubscriberFromListener) works.
// An inherited socket is never removed.
package cyrus
