package bonnie

import "errors"

// ErrUnknownEvent is wrapped when a notification names an event type Bonnie
// does not know.
var ErrUnknownEvent = errors.New("bonnie: unknown event type")

// payload returns the notification's message part. Replaced by the decoder.
func (e *Event) payload() []byte { return e.Raw }
