package archive_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/testmail"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// benchSource delivers prepared notifications as fast as the engine takes
// them, without waiting for acknowledgements (like source/cyrus).
type benchSource struct {
	ch   chan *message.Message
	once sync.Once
}

func (s *benchSource) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return s.ch, nil
}

func (s *benchSource) Close() error {
	s.once.Do(func() { close(s.ch) })
	return nil
}

const benchFolder = "bench0folder0uniqueid0001"

// BenchmarkArchiveIngest measures the whole archive path for b.N
// MessageAppend notifications of distinct bodies: decode, fetch the body
// from a Cyrus spool layout (read, SHA-256, zstd, fsync, rename), append
// the event with its BodyRef to the log (SQLite, synchronous=FULL), and
// the archive sink indexing it; the clock stops when the sink has indexed
// the last one. The -encrypted variants store bodies encrypted at rest
// (a data key per body, wrapped by a site key, in a key file of its own).
func BenchmarkArchiveIngest(b *testing.B) {
	prose := testmail.Prose()
	type benchCase struct {
		name    string
		size    int
		make    func(id string) []byte
		encrypt bool
	}
	var cases []benchCase
	for _, tc := range []benchCase{
		{"typical-5KB", 5 << 10, func(id string) []byte { return testmail.Realistic(id, 5<<10, prose).Bytes }, false},
		{"large-5MB", 5 << 20, func(id string) []byte { return testmail.Large(id, 5<<20, uint64(len(id))+fnv(id)).Bytes }, false},
	} {
		cases = append(cases, tc)
		tc.name += "-encrypted"
		tc.encrypt = true
		cases = append(cases, tc)
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			part := filepath.Join(dir, "spool")
			mdir := filepath.Join(part, "uuid", benchFolder[:1], benchFolder[1:2], benchFolder)
			if err := os.MkdirAll(mdir, 0o755); err != nil {
				b.Fatal(err)
			}
			var raw int64
			payloads := make([][]byte, b.N)
			for i := range b.N {
				body := tc.make(fmt.Sprintf("b%d-%d", b.N, i))
				raw += int64(len(body))
				if err := os.WriteFile(filepath.Join(mdir, fmt.Sprintf("%d.", i+1)), body, 0o600); err != nil {
					b.Fatal(err)
				}
				payloads[i] = fmt.Appendf(nil, `{"event":"MessageAppend","timestamp":"2026-11-28T21:00:00.000Z","service":"imap","mailboxID":"%s","uri":"imap://h/user.alice.Bench;UIDVALIDITY=7/;UID=%d","user":"alice","messageSize":%d}`,
					benchFolder, i+1, len(body))
			}
			lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer lg.Close()
			blobs, proj := archive.Paths(dir)
			var opts []blob.Option
			if tc.encrypt {
				key, err := blob.WriteKeyFile(filepath.Join(dir, "site.key"))
				if err != nil {
					b.Fatal(err)
				}
				opts = append(opts, blob.WithSiteKey(key))
			}
			store, err := blob.Open(blobs, opts...)
			if err != nil {
				b.Fatal(err)
			}
			a, err := archive.Open(ctx, proj, store)
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			src := &benchSource{ch: make(chan *message.Message, b.N)}
			eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				Bodies:  &fetch.Spool{Partitions: []string{part}, Store: store},
				Sources: []bonnie.Source{{Name: "bench", Subscriber: src}}, Sinks: []bonnie.Sink{a}})
			if err != nil {
				b.Fatal(err)
			}
			// Drop the spool files from the page cache? No: Cyrus has just
			// written them; they are in the cache in real life too.
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			b.ResetTimer()
			start := time.Now()
			go func() { done <- eng.Run(runCtx) }()
			msgs := make([]*message.Message, b.N)
			for i, p := range payloads {
				msgs[i] = message.NewMessage(watermill.NewUUID(), p)
				src.ch <- msgs[i]
			}
			for _, m := range msgs {
				<-m.Acked()
			}
			head, _ := lg.Head(ctx)
			for {
				if pos, _ := a.Position(ctx); pos >= head {
					break
				}
				time.Sleep(time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			stop()
			<-done
			bodies, _, _ := a.Count(ctx)
			if bodies != b.N {
				b.Fatalf("%d bodies indexed, want %d", bodies, b.N)
			}
			stored, alloc := storeSize(b, store)
			b.ReportMetric(float64(raw)/1e6/elapsed.Seconds(), "MB/s")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(stored)/float64(raw), "stored/raw")
			b.ReportMetric(float64(alloc)/float64(raw), "disk/raw")
		})
	}
}

// storeSize returns the bytes of the store's files and the disk space
// they take (whole blocks), key files included.
func storeSize(tb testing.TB, s *blob.Store) (files, alloc int64) {
	tb.Helper()
	keys, _ := filepath.Glob(filepath.Join(s.Root(), "keys", "*", "*.key"))
	for _, k := range keys {
		var st syscall.Stat_t
		if err := syscall.Stat(k, &st); err == nil {
			files += st.Size
			alloc += st.Blocks * 512
		}
	}
	err := s.Walk(context.Background(), func(d string, size int64, err error) error {
		files += size
		var st syscall.Stat_t
		if err := syscall.Stat(s.Path(d), &st); err == nil {
			alloc += st.Blocks * 512
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return files, alloc
}

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// BenchmarkDedupCorpus stores a corpus of deliveries the way ingest does,
// one Put per recipient, and reports how much the store saves: unique
// bodies are far fewer than deliveries (dedup), and each is compressed.
//
// The corpus: 2,000 messages of realistic size (70% 2-8 KB text, 25%
// 20-200 KB with an attachment, 5% 1-5 MB), each delivered to 1 recipient
// (70%), 2-5 (20%), 10-50 (9%) or 500 (1%, all staff), plus every 20th
// message forwarded once (new bytes, same attachment: no dedup). The
// encrypted variant stores them encrypted at rest.
func BenchmarkDedupCorpus(b *testing.B) {
	for _, encrypt := range []bool{false, true} {
		name := "plain"
		if encrypt {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) { benchmarkDedupCorpus(b, encrypt) })
	}
}

func benchmarkDedupCorpus(b *testing.B, encrypt bool) {
	prose := testmail.Prose()
	r := rand.New(rand.NewPCG(1, 2))
	type msg struct {
		body  []byte
		rcpts int
	}
	var corpus []msg
	for i := range 2000 {
		id := fmt.Sprintf("c%d", i)
		var body []byte
		switch p := r.IntN(100); {
		case p < 70:
			body = testmail.Realistic(id, 2<<10+r.IntN(6<<10), prose).Bytes
		case p < 95:
			body = testmail.Large(id, 20<<10+r.IntN(180<<10), uint64(i)).Bytes
		default:
			body = testmail.Large(id, 1<<20+r.IntN(4<<20), uint64(i)).Bytes
		}
		rc := 1
		switch p := r.IntN(100); {
		case p < 70:
		case p < 90:
			rc = 2 + r.IntN(4)
		case p < 99:
			rc = 10 + r.IntN(41)
		default:
			rc = 500
		}
		corpus = append(corpus, msg{body, rc})
		if i%20 == 0 {
			fwd := append([]byte("X-Forwarded: yes\r\n"), body...)
			corpus = append(corpus, msg{fwd, 1})
		}
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		var opts []blob.Option
		if encrypt {
			key, err := blob.WriteKeyFile(filepath.Join(dir, "site.key"))
			if err != nil {
				b.Fatal(err)
			}
			opts = append(opts, blob.WithSiteKey(key))
		}
		store, err := blob.Open(filepath.Join(dir, "blobs"), opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var delivered, unique, deliveries, puts int64
		for _, m := range corpus {
			for range m.rcpts {
				info, err := store.Put(m.body)
				if err != nil {
					b.Fatal(err)
				}
				delivered += info.Size
				deliveries++
				puts++
				if info.Created {
					unique += info.Size
				}
			}
		}
		b.StopTimer()
		stored, alloc := storeSize(b, store)
		b.ReportMetric(float64(deliveries), "deliveries")
		b.ReportMetric(float64(len(corpus)), "unique")
		b.ReportMetric(float64(delivered)/float64(unique), "dedup-ratio")
		b.ReportMetric(float64(stored)/float64(unique), "stored/unique-raw")
		b.ReportMetric(float64(delivered)/float64(alloc), "delivered/disk")
		b.ReportMetric(float64(delivered)/1e9, "GB-delivered")
		b.ReportMetric(float64(alloc)/1e6, "MB-on-disk")
		b.StartTimer()
	}
}
