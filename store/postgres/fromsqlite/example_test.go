package fromsqlite_test

import (
	"context"
	"fmt"
	"log"

	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/postgres/fromsqlite"
)

// Moving a site's log from SQLite to PostgreSQL; run again to continue
// after an interruption. (Not run: it needs a server.)
func ExampleCopy() {
	ctx := context.Background()
	dst, err := postgres.Open(ctx, "postgres://bonnie@db.example/bonnie?search_path=site1")
	if err != nil {
		log.Fatal(err)
	}
	defer dst.Close()
	res, err := fromsqlite.Copy(ctx, "/var/lib/bonnie/log.db", dst, fromsqlite.Options{
		Progress: func(done, total int64) { fmt.Printf("\r%d/%d", done, total) },
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\ncopied %d..%d; head %d %x verified\n", res.Start+1, res.End, res.Head.Position, res.Head.Hash)
}
