package blob_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bonnie-archive/bonnie/internal/testmail"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// benchWriters is how many goroutines write at once (the engine's
// BodyConcurrency).
var benchWriters = func() int {
	if n, err := strconv.Atoi(os.Getenv("BONNIE_BENCH_WRITERS")); err == nil && n > 0 {
		return n
	}
	return 4
}()

// BenchmarkPut stores distinct bodies (hash, zstd, write, fsync the file
// and its directory, rename), from 4 goroutines as the engine's body
// fetches do; PutReader streams them as the IMAP and spool fetchers do.
func BenchmarkPut(b *testing.B) {
	prose := testmail.Prose()
	for _, tc := range []struct {
		name string
		make func(i int) []byte
	}{
		{"typical-5KB", func(i int) []byte { return testmail.Realistic(fmt.Sprint("p", i), 5<<10, prose).Bytes }},
		{"large-5MB", func(i int) []byte { return testmail.Large(fmt.Sprint("p", i), 5<<20, uint64(i)).Bytes }},
	} {
		for _, mode := range []string{"Put", "PutReader", "Put-encrypted", "PutReader-encrypted"} {
			stream := strings.HasPrefix(mode, "PutReader")
			name := tc.name + "/" + mode
			b.Run(name, func(b *testing.B) {
				bodies := make([][]byte, b.N)
				var raw int64
				for i := range bodies {
					bodies[i] = tc.make(i)
					raw += int64(len(bodies[i]))
				}
				s, err := blob.Open(b.TempDir(), encryptOpt(b, strings.HasSuffix(mode, "-encrypted"))...)
				if err != nil {
					b.Fatal(err)
				}
				var next, stored atomic.Int64
				b.SetParallelism(benchWriters / runtime.GOMAXPROCS(0)) // BONNIE_BENCH_WRITERS (default 4) writers
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						body := bodies[next.Add(1)-1]
						var info blob.Info
						var err error
						if stream {
							info, err = s.PutReader(bytes.NewReader(body))
						} else {
							info, err = s.Put(body)
						}
						if err != nil {
							b.Error(err)
							return
						}
						stored.Add(info.Stored)
					}
				})
				b.StopTimer()
				b.ReportMetric(float64(raw)/1e6/b.Elapsed().Seconds(), "MB/s")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				b.ReportMetric(float64(stored.Load())/float64(raw), "stored/raw")
			})
		}
	}
}

// BenchmarkPutDuplicate is the 2nd..500th delivery of one body: hash and
// stat, nothing written.
func BenchmarkPutDuplicate(b *testing.B) {
	s, _ := blob.Open(b.TempDir())
	body := testmail.Realistic("dup", 5<<10, testmail.Prose()).Bytes
	if _, err := s.Put(body); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if info, err := s.Put(body); err != nil || info.Created {
			b.Fatal(err)
		}
	}
}

// encryptOpt returns the option of a store encrypted under a new site
// key, or none.
func encryptOpt(b *testing.B, encrypt bool) []blob.Option {
	if !encrypt {
		return nil
	}
	k, err := blob.WriteKeyFile(filepath.Join(b.TempDir(), "site.key"))
	if err != nil {
		b.Fatal(err)
	}
	return []blob.Option{blob.WithSiteKey(k)}
}

// BenchmarkVerify reads a body back: (decrypt,) decompress and SHA-256.
func BenchmarkVerify(b *testing.B) {
	for _, encrypt := range []bool{false, true} {
		name := "plain"
		if encrypt {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) {
			s, _ := blob.Open(b.TempDir(), encryptOpt(b, encrypt)...)
			body := testmail.Large("v", 5<<20, 1).Bytes
			info, err := s.Put(body)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := s.Verify(info.Digest); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
