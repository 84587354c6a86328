package amqp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Relayed message bodies (see the package doc, "Bodies").
const (
	// MetaBodies, on a relayed notification, is the JSON array of the
	// bonnie.BodyRef the relay fetched for it (uid, sha256, size,
	// internalDate, or error): the bodies were published, and confirmed,
	// to BodiesTopic before the notification.
	MetaBodies = "bonnie.bodies"

	// The headers of a body chunk.
	MetaBodyDigest = "bonnie.body.sha256" // the whole body's SHA-256 (hex)
	MetaBodySize   = "bonnie.body.size"   // the whole body's size
	MetaBodyPart   = "bonnie.body.part"   // this chunk's index, from 0
	MetaBodyParts  = "bonnie.body.parts"  // how many chunks
	MetaBodyOffset = "bonnie.body.offset" // where this chunk's bytes start

	// DefaultChunkSize is the largest body chunk the relay publishes:
	// well under RabbitMQ's max_message_size (128 MiB by default in 3.x,
	// and large messages stall a queue and the broker's memory).
	DefaultChunkSize = 4 << 20
	// DefaultMaxBodySize is the largest body a BodyReceiver assembles.
	DefaultMaxBodySize = 1 << 30
)

// BodiesTopic is the topic (fanout exchange) the bodies of topic's
// notifications travel on: "<topic>.bodies". Its queues are
// QueueName(BodiesTopic(topic), group).
func BodiesTopic(topic string) string { return topic + ".bodies" }

// ChunkID is the Watermill UUID of a body chunk: the digest and the part,
// so that a chunk published twice is the same message.
func ChunkID(digest string, part int) string { return digest + "." + strconv.Itoa(part) }

// PublishBody publishes the body read from r (size bytes, SHA-256 digest)
// to topic in chunks of at most chunk bytes, each confirmed by the broker
// before the next is read. Publishing a body again is harmless: the
// receiver keeps each digest once.
func PublishBody(pub message.Publisher, topic, digest string, size int64, r io.Reader, chunk int) error {
	if chunk <= 0 {
		chunk = DefaultChunkSize
	}
	parts := int((size + int64(chunk) - 1) / int64(chunk))
	if parts == 0 {
		parts = 1 // the empty body is one empty chunk
	}
	buf := make([]byte, chunk)
	var off int64
	for part := 0; part < parts; part++ {
		n := int(min(int64(chunk), size-off))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("amqp: body %s: read part %d: %w", digest, part, err)
		}
		m := message.NewMessage(ChunkID(digest, part), buf[:n])
		m.Metadata = message.Metadata{
			MetaBodyDigest: digest,
			MetaBodySize:   strconv.FormatInt(size, 10),
			MetaBodyPart:   strconv.Itoa(part),
			MetaBodyParts:  strconv.Itoa(parts),
			MetaBodyOffset: strconv.FormatInt(off, 10),
		}
		if err := pub.Publish(topic, m); err != nil {
			return fmt.Errorf("amqp: body %s part %d/%d: %w", digest, part+1, parts, err)
		}
		off += int64(n)
	}
	return nil
}

// ErrBadChunk is wrapped by the errors of BodyReceiver.Handle for a chunk
// that can never be stored (bad headers, wrong digest): retrying it is
// useless.
var ErrBadChunk = errors.New("bad body chunk")

// BodyReceiver stores the bodies published with PublishBody in a body
// store, checking each one's SHA-256 and size. A body of one chunk is
// stored at once; the chunks of a larger one are written, each fsynced
// before it is acknowledged, into Dir/<sha256>/ (the bytes at their
// offset in "data", and one marker file per chunk received), and the
// body goes into the store, checked, once every chunk is there. So a
// chunk acknowledged survives a crash, chunks may come in any order or
// twice, and memory holds one chunk at a time.
type BodyReceiver struct {
	Store *blob.Store
	// Dir holds the bodies being assembled (required for bodies of more
	// than one chunk).
	Dir string
	// MaxSize bounds a body (default DefaultMaxBodySize).
	MaxSize int64
	Logger  *slog.Logger
	// OnStored, if set, is called with each digest once it is durable in
	// the store (fetch.Relayed.Stored wakes the events waiting for it).
	OnStored func(digest string)

	mu                   sync.Mutex
	chunks, nStored, bad atomic.Int64
}

type chunkHead struct {
	digest      string
	size, off   int64
	part, parts int
}

func parseChunk(m *message.Message, max int64) (chunkHead, error) {
	var h chunkHead
	var err error
	h.digest = m.Metadata.Get(MetaBodyDigest)
	if !blob.ValidDigest(h.digest) {
		return h, fmt.Errorf("%w: %s %q is not a SHA-256", ErrBadChunk, MetaBodyDigest, h.digest)
	}
	num := func(key string) int64 {
		if err != nil {
			return 0
		}
		var v int64
		v, err = strconv.ParseInt(m.Metadata.Get(key), 10, 64)
		if err == nil && v < 0 {
			err = fmt.Errorf("negative %s", key)
		}
		return v
	}
	h.size, h.off = num(MetaBodySize), num(MetaBodyOffset)
	h.part, h.parts = int(num(MetaBodyPart)), int(num(MetaBodyParts))
	switch {
	case err != nil:
		return h, fmt.Errorf("%w: body %s: %v", ErrBadChunk, h.digest, err)
	case h.size > max:
		return h, fmt.Errorf("%w: body %s of %d bytes, over the limit of %d", ErrBadChunk, h.digest, h.size, max)
	case h.parts < 1 || h.part >= h.parts || h.parts > 1<<20:
		return h, fmt.Errorf("%w: body %s: part %d of %d", ErrBadChunk, h.digest, h.part, h.parts)
	case h.off+int64(len(m.Payload)) > h.size:
		return h, fmt.Errorf("%w: body %s: part %d at %d+%d is past its size %d", ErrBadChunk, h.digest, h.part, h.off, len(m.Payload), h.size)
	}
	return h, nil
}

// Handle stores one chunk. An error wrapping ErrBadChunk means the chunk
// is useless (acknowledge it: Run logs and counts it); any other error is
// worth retrying (the disk).
func (r *BodyReceiver) Handle(m *message.Message) error {
	max := r.MaxSize
	if max <= 0 {
		max = DefaultMaxBodySize
	}
	h, err := parseChunk(m, max)
	if err != nil {
		return err
	}
	r.chunks.Add(1)
	if ok, err := r.Store.Has(h.digest); err != nil {
		return err
	} else if ok {
		r.stored(h.digest)
		return nil
	}
	if h.parts == 1 {
		if int64(len(m.Payload)) != h.size {
			return fmt.Errorf("%w: body %s: %d bytes, its header says %d", ErrBadChunk, h.digest, len(m.Payload), h.size)
		}
		if d := blob.Digest(m.Payload); d != h.digest {
			return fmt.Errorf("%w: body %s: its bytes hash to %s", ErrBadChunk, h.digest, d)
		}
		if _, err := r.Store.Put(m.Payload); err != nil {
			return err
		}
		r.stored(h.digest)
		return nil
	}
	if r.Dir == "" {
		return errors.New("amqp: BodyReceiver.Dir is required for bodies of several chunks")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dir := filepath.Join(r.Dir, h.digest)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	marker := filepath.Join(dir, fmt.Sprintf("%d.part", h.part))
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		_, err = f.WriteAt(m.Payload, h.off)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	have, err := filepath.Glob(filepath.Join(dir, "*.part"))
	if err != nil || len(have) < h.parts {
		return err
	}
	return r.assemble(dir, h)
}

// assemble checks the chunks of a complete body and stores it.
func (r *BodyReceiver) assemble(dir string, h chunkHead) error {
	data := filepath.Join(dir, "data")
	f, err := os.Open(data)
	if err != nil {
		return err
	}
	defer f.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, f)
	if err != nil {
		return err
	}
	if d := hex.EncodeToString(sum.Sum(nil)); d != h.digest || n != h.size {
		os.RemoveAll(dir) // the next publication starts afresh
		return fmt.Errorf("%w: body %s: %d chunks assemble to %d bytes hashing to %s, want %d bytes", ErrBadChunk, h.digest, h.parts, n, d, h.size)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	info, err := r.Store.PutReader(f)
	if err != nil {
		return err
	}
	if info.Digest != h.digest {
		return fmt.Errorf("amqp: body %s changed while stored (now %s)", h.digest, info.Digest)
	}
	os.RemoveAll(dir)
	r.stored(h.digest)
	return nil
}

func (r *BodyReceiver) stored(d string) {
	r.nStored.Add(1)
	if r.OnStored != nil {
		r.OnStored(d)
	}
}

// Counts returns the chunks handled, the bodies found stored (or already
// there) and the bad chunks dropped.
func (r *BodyReceiver) Counts() (chunks, stored, bad int64) {
	return r.chunks.Load(), r.nStored.Load(), r.bad.Load()
}

// Run handles the chunks of ch until it closes: each is Acked once durable
// (or when bad: logged as an error, counted, dropped; the event naming the
// body then records it as not received), and Nacked when the disk failed
// (RabbitMQ hands it again).
func (r *BodyReceiver) Run(ch <-chan *message.Message) {
	lg := r.Logger
	if lg == nil {
		lg = slog.Default()
	}
	for m := range ch {
		err := r.Handle(m)
		switch {
		case err == nil:
			m.Ack()
		case errors.Is(err, ErrBadChunk):
			r.bad.Add(1)
			lg.Error("relayed body chunk dropped", "uuid", m.UUID, "err", err, "bad_total", r.bad.Load())
			m.Ack()
		default:
			lg.Warn("relayed body chunk not stored; redelivered later", "uuid", m.UUID, "err", err)
			m.Nack()
		}
	}
}

// RemoveStale removes the bodies being assembled in Dir that received no
// chunk for age: a relay that was interrupted publishes every chunk of a
// body again, so nothing is lost. It returns how many it removed.
func (r *BodyReceiver) RemoveStale(age time.Duration) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ents, err := os.ReadDir(r.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		dir := filepath.Join(r.Dir, e.Name())
		parts, _ := filepath.Glob(filepath.Join(dir, "*"))
		newest := time.Time{}
		for _, p := range append(parts, dir) {
			if fi, err := os.Stat(p); err == nil && fi.ModTime().After(newest) {
				newest = fi.ModTime()
			}
		}
		if time.Since(newest) > age {
			if err := os.RemoveAll(dir); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// BodyRefs is told which bodies a relayed notification names before the
// engine ingests it (fetch.Relayed): Expect is called with the event's
// key and refs, and the returned func once the message is settled.
type BodyRefs interface {
	Expect(key string, refs []bonnie.BodyRef) (forget func())
}

// ExpectBodies wraps sub (a subscriber of relayed notifications) so that
// the body refs each message carries (MetaBodies) are handed to refs,
// keyed by the event's Key, for as long as the message is not settled.
// The payload stays the notification exactly as Cyrus sent it: the refs
// reach the log through the engine's BodyFetcher, which waits for the
// bodies to be in the store.
func ExpectBodies(sub message.Subscriber, refs BodyRefs) message.Subscriber {
	return &expectSub{Subscriber: sub, refs: refs}
}

type expectSub struct {
	message.Subscriber
	refs BodyRefs
}

func (s *expectSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := s.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for m := range in {
			if v := m.Metadata.Get(MetaBodies); v != "" {
				s.expect(ctx, m, v)
			}
			select {
			case out <- m:
			case <-ctx.Done():
				m.Nack()
			}
		}
	}()
	return out, nil
}

func (s *expectSub) expect(ctx context.Context, m *message.Message, v string) {
	var refs []bonnie.BodyRef
	if err := json.NewDecoder(strings.NewReader(v)).Decode(&refs); err != nil {
		return // the fetcher then says the relay named no bodies
	}
	ev, err := bonnie.Decode(m.Payload)
	if err != nil {
		return // a dead letter
	}
	forget := s.refs.Expect(ev.Key(), refs)
	go func() {
		select {
		case <-m.Acked():
		case <-m.Nacked():
		case <-ctx.Done():
		}
		forget()
	}()
}

// SubscribeInitialize passes through to the wrapped subscriber.
func (s *expectSub) SubscribeInitialize(topic string) error {
	if si, ok := s.Subscriber.(message.SubscribeInitializer); ok {
		return si.SubscribeInitialize(topic)
	}
	return nil
}
