package postgres_test

import (
	"context"
	"fmt"
	"log"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/postgres"
)

// A central ingest opens the log on PostgreSQL and hands it to the engine
// as its Store; several ingest processes may share it. (Not run: it needs a
// server.)
func ExampleOpen() {
	ctx := context.Background()
	lg, err := postgres.Open(ctx, "postgres://bonnie@db.example/bonnie?sslmode=verify-full&search_path=site1")
	if err != nil {
		log.Fatal(err)
	}
	defer lg.Close()

	eng, err := bonnie.New(bonnie.Options{Store: lg /* , Sources, Sinks */})
	if err != nil {
		log.Fatal(err)
	}
	_ = eng // eng.Run(ctx)

	// Keep the head hash somewhere the database's writers cannot reach;
	// it is what exposes a rewritten or truncated tail later.
	anchor, err := lg.HeadHash(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := lg.VerifyAnchored(ctx, anchor); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("verified up to %d: %x\n", anchor.Position, anchor.Hash)
}
