package cyrus_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/user"
	"path/filepath"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie/source/cyrus"
)

// A Watermill Router consuming Cyrus's datagram notifications. In
// production Path is what imapd.conf's notifysocket names, the socket
// belongs to the cyrus user (the defaults), and the handler acks only once
// the event is durable (bonnie.Engine does exactly that); here the
// example's own user plays Cyrus.
func ExampleDatagramSubscriber() {
	dir, err := os.MkdirTemp("", "bonnie-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // Cyrus must be able to reach the socket

	me, err := user.Current()
	if err != nil {
		log.Fatal(err)
	}
	sub, err := cyrus.NewDatagramSubscriber(cyrus.Options{
		Path:        filepath.Join(dir, "notify"),
		SocketUser:  me.Username,        // default "cyrus"
		AllowedUIDs: []int{os.Getuid()}, // default: the user "cyrus"
		OnGiveUp: func(ctx context.Context, raw []byte, reason string) {
			log.Printf("dead letter: %s", reason) // the engine stores it
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	handled := make(chan struct{})
	router.AddConsumerHandler("ingest", "", sub, func(msg *message.Message) error {
		fields := bytes.Split(msg.Payload, []byte{0})
		fmt.Printf("%s notification, class %s: %s\n",
			msg.Metadata.Get(cyrus.MetaFraming), fields[1], fields[6])
		close(handled)
		return nil // Ack: the subscriber forgets it (dlist: replies OK to Cyrus)
	})
	go func() {
		if err := router.Run(context.Background()); err != nil {
			log.Print(err)
		}
	}()
	<-router.Running()

	// What Cyrus's imapd sends on a LOGIN (trimmed).
	c, err := net.Dial("unixgram", sub.Path())
	if err != nil {
		log.Fatal(err)
	}
	c.Write([]byte("log\x00EVENT\x00\x00\x00\x000\x00{\"event\":\"Login\",\"user\":\"alice\"}\x00"))
	c.Close()

	<-handled
	router.Close() // closes the subscriber too: it drains, then removes the socket
	// Output:
	// datagram notification, class EVENT: {"event":"Login","user":"alice"}
}
