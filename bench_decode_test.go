package bonnie_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bonnie-archive/bonnie"
)

// BenchmarkDecode decodes every captured Cyrus notification (datagrams
// and dlist requests): the work done for each event on the ingest path,
// in front of the append that a synchronous Cyrus waits for.
//
//	go test -run '^$' -bench Decode -benchmem .
func BenchmarkDecode(b *testing.B) {
	for _, dir := range []string{"cyrus-3.6.1", "cyrus-3.6.1-dlist"} {
		b.Run(dir, func(b *testing.B) {
			files, _ := filepath.Glob(filepath.Join("testdata", dir, "*"))
			var raws [][]byte
			size := 0
			for _, f := range files {
				raw, err := os.ReadFile(f)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bonnie.Decode(raw); err == nil {
					raws = append(raws, raw)
					size += len(raw)
				}
			}
			if len(raws) == 0 {
				b.Fatal("no capture decodes")
			}
			b.SetBytes(int64(size / len(raws)))
			b.ResetTimer()
			for i := range b.N {
				if _, err := bonnie.Decode(raws[i%len(raws)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
