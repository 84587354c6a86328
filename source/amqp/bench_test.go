package amqp

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
	"github.com/bonnie-archive/bonnie/store/sqlite"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// variants returns n distinct real notifications (the captures with their
// timestamps moved).
func variants(n int) [][]byte {
	caps := storetest.Captures()
	out := make([][]byte, n)
	for i := range out {
		out[i] = storetest.Variant(caps[i%len(caps)], i).Raw
	}
	return out
}

// BenchmarkPublish is the relay's side: b.N notifications published with
// confirms from 1 or 8 goroutines, one message per Publish or batches of
// 100 (the relay's --batch default: one Publish per spool read).
func BenchmarkPublish(b *testing.B) {
	for _, tc := range []struct{ workers, batch int }{{1, 1}, {8, 1}, {1, 100}} {
		b.Run(fmt.Sprintf("goroutines%d/batch%d", tc.workers, tc.batch), func(b *testing.B) {
			requireBroker(b)
			d := track(b)
			raws := variants(b.N)
			pub, sub := newBenchPair(b, d, Config{URL: testURL()})
			defer sub.Close()
			defer pub.Close()
			topic := "bonnie-test-bench-" + watermill.NewUUID()
			b.ResetTimer()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range tc.workers {
				wg.Go(func() {
					for {
						i := int(next.Add(int64(tc.batch))) - tc.batch
						if i >= b.N {
							return
						}
						var msgs []*message.Message
						for k := i; k < min(i+tc.batch, b.N); k++ {
							msgs = append(msgs, message.NewMessage(watermill.NewUUID(), raws[k]))
						}
						if err := pub.Publish(topic, msgs...); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

// BenchmarkIngest is the central ingest's side: b.N notifications waiting
// in the group's queue, consumed by bonnie.Engine through one Subscriber
// into store/sqlite or store/postgres (both fully durable), each
// acknowledged once durable: one at a time (watermill-amqp's subscription,
// with a prefetch of 1 or 64) or a window of 256 (Config.Window).
func BenchmarkIngest(b *testing.B) {
	for _, tc := range []struct {
		store            string
		prefetch, window int
	}{{"sqlite", 1, 1}, {"sqlite", 64, 1}, {"sqlite", 1, 256}, {"postgres", 1, 1}, {"postgres", 64, 1}, {"postgres", 1, 256}} {
		b.Run(fmt.Sprintf("%s/prefetch%d/window%d", tc.store, tc.prefetch, tc.window), func(b *testing.B) {
			requireBroker(b)
			d := track(b)
			raws := variants(b.N)
			c := Config{URL: testURL(), Prefetch: tc.prefetch, Window: tc.window}
			pub, sub := newBenchPair(b, d, c)
			defer pub.Close()
			topic := "bonnie-test-bench-" + watermill.NewUUID()
			var wg sync.WaitGroup
			var next atomic.Int64
			for range 8 {
				wg.Go(func() {
					for {
						i := int(next.Add(1)) - 1
						if i >= b.N {
							return
						}
						if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), raws[i])); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			lg := openStore(b, tc.store)
			eng, err := bonnie.New(bonnie.Options{Store: lg, Sources: []bonnie.Source{{Name: "amqp", Subscriber: sub, Topic: topic}}, Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ResetTimer()
			go func() { done <- eng.Run(ctx) }()
			for {
				h, err := lg.Head(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				if int(h) >= b.N {
					break
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// openStore opens an empty log of the kind named.
func openStore(b *testing.B, kind string) bonnie.Store {
	var (
		lg  bonnie.Store
		err error
	)
	if kind == "postgres" {
		_, dsn := pgtest.Schema(b)
		lg, err = postgres.Open(b.Context(), dsn)
	} else {
		lg, err = sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "log.db"))
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lg.Close() })
	return lg
}

func newBenchPair(b *testing.B, d *declared, c Config) (*Publisher, *Subscriber) {
	pub, sub := newPair(b, d, c)
	return pub.(*Publisher), sub.(*Subscriber)
}
