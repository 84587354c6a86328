package intercept

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Actions of an Interception event.
const (
	ActionStart = "start"
	ActionStop  = "stop"
)

// Target is the person intercepted, by persistent identity: what
// bonnie.Identity.ID says in the events' identities (a directory's
// entryUUID, or the login itself on a site without a directory, Kind
// "login"). Names are the logins, aliases and addresses known when the
// interception was authorised; the sink adds every name it later sees on
// an identity with the same ID (a renamed login), and matches senders and
// recipients by the addresses among them.
type Target struct {
	ID    string              `json:"id"`
	Kind  bonnie.IdentityKind `json:"kind,omitempty"`
	Login string              `json:"login,omitempty"`
	Names []string            `json:"names,omitempty"`
}

// TargetOf returns the Target of a resolved identity.
func TargetOf(id *bonnie.Identity) Target {
	return Target{ID: id.ID, Kind: id.Kind, Login: id.Login, Names: id.Names()}
}

// Notice is the JSON of Bonnie's own events vnd.bonnie.Interception and
// vnd.bonnie.InterceptDelivery, as given to bonnie.Engine.Record (and
// kept, as sent, in the event's Raw). Its members are:
//
// Both events:
//
//	event                       "vnd.bonnie.Interception" or "vnd.bonnie.InterceptDelivery"
//	timestamp                   when it was authorised or stopped; for a delivery, when the destination confirmed it (UTC, RFC 3339)
//	service                     who appended it: "bonnie-cli", or the sink ("intercept")
//	vnd.bonnie.interceptionId   the interception's id (a UUIDv7 chosen by whoever starts it)
//	vnd.bonnie.warrant          the warrant's reference
//	vnd.bonnie.destination      where the copy goes: amqp://user@host:port/vhost?queue=Q, or dir:PATH (never a password)
//
// vnd.bonnie.Interception only:
//
//	vnd.bonnie.action           "start" or "stop"
//	vnd.bonnie.target           the Target: {"id", "kind", "login", "names"}
//	vnd.bonnie.from, .to        the window, in event time: [from, to)
//	vnd.bonnie.authorisedBy     who authorised it (the name on the warrant)
//	vnd.bonnie.requestedBy      who recorded it (the operating system user, host, command)
//	vnd.bonnie.reason           why it was stopped (optional)
//
// vnd.bonnie.InterceptDelivery only:
//
//	vnd.bonnie.interception     the log position of the interception's start
//	vnd.bonnie.delivered        what was handed over: [Item]
//
// A stop names only the interception id (and who, and why); start members
// it repeats are ignored.
type Notice struct {
	Event       string `json:"event"`
	Timestamp   string `json:"timestamp"`
	Service     string `json:"service,omitempty"`
	ID          string `json:"vnd.bonnie.interceptionId"`
	Warrant     string `json:"vnd.bonnie.warrant,omitempty"`
	Destination string `json:"vnd.bonnie.destination,omitempty"`

	Action       string  `json:"vnd.bonnie.action,omitempty"`
	Target       *Target `json:"vnd.bonnie.target,omitempty"`
	From         string  `json:"vnd.bonnie.from,omitempty"`
	To           string  `json:"vnd.bonnie.to,omitempty"`
	AuthorisedBy string  `json:"vnd.bonnie.authorisedBy,omitempty"`
	RequestedBy  string  `json:"vnd.bonnie.requestedBy,omitempty"`
	Reason       string  `json:"vnd.bonnie.reason,omitempty"`

	Interception bonnie.Position `json:"vnd.bonnie.interception,omitempty"`
	Delivered    []Item          `json:"vnd.bonnie.delivered,omitempty"`
}

// Item is one log record handed over to a destination, with the bodies
// that went with it: enough to show exactly what was handed over (the
// record's hash is the one in the log's chain, a body's SHA-256 the name
// of its exact bytes in the body store).
type Item struct {
	Position bonnie.Position `json:"position"`
	Key      string          `json:"key"`
	Hash     string          `json:"hash"`
	Type     string          `json:"type"`
	Time     time.Time       `json:"time"`
	// MessageID is the idempotency key the destination got: the AMQP
	// message id, or the file name's stem in a directory.
	MessageID string     `json:"messageId"`
	Bodies    []BodyItem `json:"bodies,omitempty"`
}

// BodyItem is one message body handed over.
type BodyItem struct {
	UID    uint32 `json:"uid"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Start returns the JSON of an Interception event that starts
// interception id. It checks the members a start needs and that the
// destination carries no password (the log is kept forever: a secret
// belongs in the daemon's configuration, see Options.AMQPPassword).
func Start(id string, target Target, warrant string, from, to time.Time, destination, authorisedBy, requestedBy string, at time.Time) ([]byte, error) {
	switch {
	case !validID.MatchString(id):
		return nil, fmt.Errorf("intercept: interception id %q: want letters, digits, '.', '_' or '-' (at most 128, the first a letter or digit)", id)
	case target.ID == "":
		return nil, errors.New("intercept: an interception needs a target identity")
	case strings.TrimSpace(warrant) == "":
		return nil, errors.New("intercept: an interception needs a warrant reference")
	case strings.TrimSpace(authorisedBy) == "":
		return nil, errors.New("intercept: an interception needs who authorised it")
	case from.IsZero() || to.IsZero() || !from.Before(to):
		return nil, fmt.Errorf("intercept: the window [%s, %s) is empty", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	if _, err := ParseDestination(destination); err != nil {
		return nil, err
	}
	if u, err := url.Parse(destination); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return nil, errors.New("intercept: the destination holds a password, which would be kept in the log forever; give it to the daemon instead (bonnied --intercept-amqp-password-file)")
		}
	}
	return json.Marshal(Notice{
		Event: bonnie.Interception.String(), Timestamp: stamp(at), Service: "bonnie-cli",
		ID: id, Warrant: warrant, Destination: destination, Action: ActionStart, Target: &target,
		From: stamp(from), To: stamp(to), AuthorisedBy: authorisedBy, RequestedBy: requestedBy,
	})
}

// Stop returns the JSON of an Interception event that ends interception
// id: nothing after it in the log is delivered.
func Stop(id, requestedBy, reason string, at time.Time) ([]byte, error) {
	if id == "" {
		return nil, errors.New("intercept: stop needs the interception id")
	}
	return json.Marshal(Notice{
		Event: bonnie.Interception.String(), Timestamp: stamp(at), Service: "bonnie-cli",
		ID: id, Action: ActionStop, RequestedBy: requestedBy, Reason: reason,
	})
}

// validID is what an interception id may be: it names files and AMQP
// message ids.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseNotice reads the members of an Interception or InterceptDelivery
// record.
func ParseNotice(rec bonnie.Record) (*Notice, error) {
	if rec.Event == nil || (rec.Event.Type != bonnie.Interception && rec.Event.Type != bonnie.InterceptDelivery) {
		return nil, fmt.Errorf("intercept: position %d is not an interception event", rec.Position)
	}
	var n Notice
	if err := json.Unmarshal(rec.Event.Raw, &n); err != nil {
		return nil, fmt.Errorf("intercept: position %d: %w", rec.Position, err)
	}
	if n.ID == "" {
		return nil, fmt.Errorf("intercept: position %d has no vnd.bonnie.interceptionId", rec.Position)
	}
	return &n, nil
}

// Interception is one interception as the log says it is: started (with
// its warrant) at Position and, once stopped, stopped at StoppedAt.
type Interception struct {
	ID           string          `json:"id"`
	Target       Target          `json:"target"`
	Warrant      string          `json:"warrant"`
	From         time.Time       `json:"from"`
	To           time.Time       `json:"to"`
	Destination  string          `json:"destination"`
	AuthorisedBy string          `json:"authorisedBy"`
	RequestedBy  string          `json:"requestedBy,omitempty"`
	Position     bonnie.Position `json:"position"`
	Recorded     time.Time       `json:"recorded"`
	// StoppedAt is the position of the stop (0 while not stopped);
	// Stopped when it was recorded, StoppedBy and StopReason who and why.
	StoppedAt  bonnie.Position `json:"stoppedAt,omitempty"`
	Stopped    time.Time       `json:"stopped,omitzero"`
	StoppedBy  string          `json:"stoppedBy,omitempty"`
	StopReason string          `json:"stopReason,omitempty"`
	// Deliveries counts the InterceptDelivery records (List only).
	Deliveries int `json:"deliveries"`
}

// Covers reports whether the interception covers the record at pos whose
// event happened at t: after the interception's start in the log (never
// reaching back before it, whatever its window says), before its stop,
// and inside its window in event time. Whom the event concerns is another
// question (see Sink).
func (it *Interception) Covers(pos bonnie.Position, t time.Time) bool {
	return pos > it.Position && (it.StoppedAt == 0 || pos < it.StoppedAt) &&
		!t.Before(it.From) && t.Before(it.To)
}

// Active reports whether the interception is in force at time now.
func (it *Interception) Active(now time.Time) bool {
	return it.StoppedAt == 0 && !now.Before(it.From) && now.Before(it.To)
}

// apply folds one Interception record into the set by id; errors name
// what was wrong and leave the set as it was.
func apply(set map[string]*Interception, rec bonnie.Record) error {
	n, err := ParseNotice(rec)
	if err != nil {
		return err
	}
	switch n.Action {
	case ActionStart:
		if _, dup := set[n.ID]; dup {
			return fmt.Errorf("intercept: position %d starts interception %s again; the first start stands", rec.Position, n.ID)
		}
		if n.Target == nil || n.Target.ID == "" {
			return fmt.Errorf("intercept: position %d: interception %s has no target", rec.Position, n.ID)
		}
		from, err1 := time.Parse(time.RFC3339Nano, n.From)
		to, err2 := time.Parse(time.RFC3339Nano, n.To)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("intercept: position %d: interception %s: window: %w", rec.Position, n.ID, err)
		}
		set[n.ID] = &Interception{
			ID: n.ID, Target: *n.Target, Warrant: n.Warrant, From: from.UTC(), To: to.UTC(),
			Destination: n.Destination, AuthorisedBy: n.AuthorisedBy, RequestedBy: n.RequestedBy,
			Position: rec.Position, Recorded: rec.Appended,
		}
	case ActionStop:
		it, ok := set[n.ID]
		if !ok {
			return fmt.Errorf("intercept: position %d stops unknown interception %s", rec.Position, n.ID)
		}
		if it.StoppedAt == 0 {
			it.StoppedAt, it.Stopped, it.StoppedBy, it.StopReason = rec.Position, rec.Appended, n.RequestedBy, n.Reason
		}
	default:
		return fmt.Errorf("intercept: position %d: unknown action %q", rec.Position, n.Action)
	}
	return nil
}

// Delivery is one InterceptDelivery record: what one interception handed
// over to its destination at one time.
type Delivery struct {
	Position     bonnie.Position `json:"position"`
	Recorded     time.Time       `json:"recorded"`
	Confirmed    time.Time       `json:"confirmed"`
	Interception string          `json:"interception"`
	Warrant      string          `json:"warrant"`
	Destination  string          `json:"destination"`
	Items        []Item          `json:"items"`
}

// scan calls fn for every record of the types in mask after from, in log
// order, reading only those when the log can filter (bonnie.EachMatching).
func scan(ctx context.Context, lg bonnie.Log, from bonnie.Position, mask bonnie.EventMask, fn func(bonnie.Record) error) error {
	var fnErr error
	_, err := bonnie.EachMatching(ctx, lg, from, mask, func(r bonnie.Record) error {
		fnErr = fn(r)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("intercept: read log: %w", err)
	}
	return nil
}

// List returns every interception the log holds, in the order they were
// started, with their deliveries counted. Malformed interception events
// (which only a bug could append) are skipped and reported in the error
// joined to the result.
func List(ctx context.Context, lg bonnie.Log) ([]*Interception, error) {
	set := map[string]*Interception{}
	var bad []error
	err := scan(ctx, lg, 0, bonnie.Mask(bonnie.Interception, bonnie.InterceptDelivery), func(rec bonnie.Record) error {
		if rec.Event.Type == bonnie.Interception {
			if err := apply(set, rec); err != nil {
				bad = append(bad, err)
			}
			return nil
		}
		if n, err := ParseNotice(rec); err == nil && set[n.ID] != nil {
			set[n.ID].Deliveries++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*Interception, 0, len(set))
	for _, it := range set {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Position < out[j].Position })
	return out, errors.Join(bad...)
}

// Deliveries returns the InterceptDelivery records of interception id in
// log order: everything it handed over.
func Deliveries(ctx context.Context, lg bonnie.Log, id string) ([]Delivery, error) {
	var out []Delivery
	err := scan(ctx, lg, 0, bonnie.Mask(bonnie.InterceptDelivery), func(rec bonnie.Record) error {
		n, err := ParseNotice(rec)
		if err != nil || n.ID != id {
			return nil
		}
		confirmed, _ := time.Parse(time.RFC3339Nano, n.Timestamp)
		out = append(out, Delivery{
			Position: rec.Position, Recorded: rec.Appended, Confirmed: confirmed.UTC(), Interception: n.ID,
			Warrant: n.Warrant, Destination: n.Destination, Items: n.Delivered,
		})
		return nil
	})
	return out, err
}
