package backup

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Name is the backup sink's name (bonnied --sinks backup).
const Name = "backup"

// Events are the events that put a message in a folder, live or found
// on the server by a backfill or a reconciliation: the ones whose bodies a
// restore will need.
var Events = bonnie.Mask(bonnie.MessageAppend, bonnie.MessageNew, bonnie.MessageCopy, bonnie.MessageMove,
	bonnie.Backfill, bonnie.Reconcile)

// Sink is the backup sink. Everything a restore needs of a folder's past
// (its names, ACLs, each message's presence, flags and internal date over
// time) is in the log already, as the changes the engine records, and the
// bodies are in the body store shared with the archive, written at ingest
// (Options.Bodies). What the sink adds is the check, as the mail arrives
// rather than on the day of a restore, that every message put in a folder
// has its body: a body the engine could not fetch, or one missing from
// the store, is logged with the event's position and counted (Missing),
// so that an operator can backfill it while the server still has it.
type Sink struct {
	store   *blob.Store
	log     *slog.Logger
	checked atomic.Int64
	missing atomic.Int64
}

// NewSink returns the backup sink over the body store.
func NewSink(store *blob.Store, log *slog.Logger) *Sink {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sink{store: store, log: log.With("sink", Name)}
}

// Name implements bonnie.Sink.
func (s *Sink) Name() string { return Name }

// Events implements bonnie.Sink.
func (s *Sink) Events() bonnie.EventMask { return Events }

// Handle implements bonnie.Sink: it checks that the bodies the event
// names are in the store. A store that cannot be read is an error (the
// engine retries); a missing body is logged and counted, not an error:
// retrying would not bring it back.
func (s *Sink) Handle(ctx context.Context, rec bonnie.Record) error {
	ev := rec.Event
	if ev == nil {
		return nil
	}
	for _, b := range ev.Bodies {
		s.checked.Add(1)
		if b.Error != "" || b.Digest == "" {
			s.missing.Add(1)
			s.log.Warn("a restore will lack this body: it could not be fetched at ingest",
				"position", rec.Position, "mailbox", ev.Mailbox.Name, "uid", b.UID, "error", b.Error)
			continue
		}
		ok, err := s.store.Has(b.Digest)
		if err != nil {
			return err
		}
		if !ok {
			s.missing.Add(1)
			s.log.Warn("a restore will lack this body: it is not in the body store",
				"position", rec.Position, "mailbox", ev.Mailbox.Name, "uid", b.UID, "sha256", b.Digest)
		}
	}
	return nil
}

// Checked and Missing count the bodies the sink looked at and those a
// restore would lack.
func (s *Sink) Checked() int64 { return s.checked.Load() }

// Missing: see Checked.
func (s *Sink) Missing() int64 { return s.missing.Load() }
