package amqp_test

import (
	"context"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/source/amqp"
)

// A relay publishes each notification it took from Cyrus, and drops it
// from its spool once Publish returns nil. (Not run: it needs a broker.)
func ExampleNewPublisher() {
	pub, err := amqp.NewPublisher(amqp.Config{URL: "amqp://relay:secret@mq.example:5672/"})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	raw := []byte("...a notification as Cyrus sent it...")
	msg := message.NewMessage(watermill.NewUUID(), raw)
	msg.Metadata.Set(bonnie.MetaSource, "cyrus-datagram:/run/cyrus/notify@imap1")
	if err := pub.Publish(amqp.DefaultTopic, msg); err != nil {
		log.Print(err) // keep it in the spool, try again later
	}
}

// The central ingest reads its group's queue; several central nodes may
// run this with the same group and share the messages. (Not run: it needs
// a broker and a log.)
func ExampleNewSource() {
	src, err := amqp.NewSource("amqp", amqp.DefaultTopic, amqp.Config{
		URL:      "amqp://ingest:secret@mq.example:5672/",
		Group:    amqp.DefaultGroup,
		Prefetch: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	var store bonnie.Store // store/postgres or store/sqlite
	eng, err := bonnie.New(bonnie.Options{Store: store, Sources: []bonnie.Source{src}})
	if err != nil {
		log.Fatal(err)
	}
	_ = eng.Run(context.Background())
}
