package fetch_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/testmail"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// BenchmarkFetch fetches b.N distinct bodies from a real Cyrus into the
// body store, 4 at a time as the engine does, over IMAP (admin authorized
// as the owner, BODY.PEEK[]) and from the spool files: the body half of
// archive ingest.
func BenchmarkFetch(b *testing.B) {
	prose := testmail.Prose()
	for _, tc := range []struct {
		name string
		make func(i int) []byte
	}{
		{"typical-5KB", func(i int) []byte { return testmail.Realistic(fmt.Sprint("f", i), 5<<10, prose).Bytes }},
		{"large-5MB", func(i int) []byte { return testmail.Large(fmt.Sprint("f", i), 5<<20, uint64(i)).Bytes }},
	} {
		for _, via := range []string{"imap", "spool"} {
			b.Run(tc.name+"/"+via, func(b *testing.B) {
				s := cyrustest.Start(b, cyrustest.Options{Users: map[string]string{"alice": "pw"}})
				c := s.DialQuiet(b, "alice")
				var raw int64
				evs := make([]*bonnie.Event, b.N)
				for i := range b.N {
					body := tc.make(i)
					raw += int64(len(body))
					cmd := c.Append("INBOX", int64(len(body)), &imap.AppendOptions{Time: time.Now()})
					cmd.Write(body)
					cmd.Close()
					data, err := cmd.Wait()
					if err != nil {
						b.Fatal(err)
					}
					evs[i] = &bonnie.Event{Type: bonnie.MessageAppend, UIDs: []uint32{uint32(data.UID)},
						Mailbox: bonnie.MailboxURL{Name: "user.alice", Owner: "alice", UIDValidity: data.UIDValidity}}
				}
				// The only mailbox (alice's INBOX) is the only folder of
				// the spool: its name is the uniqueid.
				dirs, err := filepath.Glob(filepath.Join(s.Dir(), "spool", "uuid", "*", "*", "*"))
				if err != nil || len(dirs) != 1 {
					b.Fatalf("spool folders %v %v", dirs, err)
				}
				mailboxID := filepath.Base(dirs[0])
				store, _ := blob.Open(filepath.Join(b.TempDir(), "blobs"))
				var f bonnie.BodyFetcher = &fetch.Spool{Partitions: []string{filepath.Join(s.Dir(), "spool")}, Store: store}
				if via == "imap" {
					im, err := fetch.NewIMAP(fetch.IMAPOptions{Addr: s.IMAPAddr(), User: cyrustest.AdminUser, Password: cyrustest.AdminPassword, Store: store})
					if err != nil {
						b.Fatal(err)
					}
					defer im.Close()
					f = im
				}
				for _, ev := range evs {
					ev.MailboxID = mailboxID
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								return
							}
							refs, err := f.FetchBodies(context.Background(), evs[i])
							if err != nil || refs[0].Error != "" {
								b.Errorf("%v %+v", err, refs)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(raw)/1e6/b.Elapsed().Seconds(), "MB/s")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}
