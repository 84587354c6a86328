package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/bonnie-archive/bonnie"
)

// Asked is what a Query event records: who asked, what, from where.
type Asked struct {
	// By is who asked (the operating-system user, and the one behind
	// sudo); it is also the event's user.
	By string `json:"by"`
	// Command names the question ("history message", "access",
	// "search"...); Args are its arguments as given.
	Command string `json:"command"`
	Args    any    `json:"args,omitempty"`
	Host    string `json:"host,omitempty"`
	// Nonce makes two identical questions two events.
	Nonce string `json:"nonce"`
	// Service is the event's service: who took the question
	// ("bonnie-cli" when empty, "bonnie-api" for package httpapi).
	Service string `json:"-"`
	// ClientIP and ClientPort are the event's client address, for a
	// question asked over the network.
	ClientIP   string `json:"-"`
	ClientPort int    `json:"-"`
}

// QueryEvent returns the vnd.bonnie.Query notification that records a
// query (for bonnie.Engine.Record; the command line appends it before it
// answers, so that the answer is never given without the record). Its
// service is a.Service ("bonnie-cli" by default), its user a.By.
func QueryEvent(a Asked, at time.Time) ([]byte, error) {
	if a.Nonce == "" {
		a.Nonce = uuid.NewString()
	}
	if at.IsZero() {
		at = time.Now()
	}
	q, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("discovery: query event: %w", err)
	}
	if a.Service == "" {
		a.Service = "bonnie-cli"
	}
	ev := map[string]any{
		"event":     bonnie.Query.String(),
		"timestamp": at.UTC().Format(time.RFC3339Nano),
		"service":   a.Service,
		"user":      a.By,
		extraQuery:  json.RawMessage(q),
	}
	if a.ClientIP != "" {
		ev["clientIP"], ev["clientPort"] = a.ClientIP, a.ClientPort
	}
	return json.Marshal(ev)
}

// Queries lists the recorded queries (the chain of custody of
// discovery), in time order.
func (x *Index) Queries(ctx context.Context) ([]Entry, error) {
	return x.entries(ctx, `SELECT `+actColumns+` FROM acts a WHERE a.action = ? ORDER BY a.time, a.position`, ActQuery)
}
