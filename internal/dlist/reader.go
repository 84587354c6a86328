package dlist

import (
	"bufio"
	"errors"
	"io"
)

// DefaultMaxSize is the request size a Reader allows when given none: far
// above Cyrus's largest event (a few tens of KiB without messageContent) and
// small enough that a hostile peer cannot make a listener hoard memory.
const DefaultMaxSize = 1 << 20

// Reader reads dlist requests one at a time from a stream. It consumes
// exactly the bytes of one request, so the same bufio.Reader can carry the
// next one (Cyrus sends one per connection, but nothing in the format says
// so).
type Reader struct {
	r   *bufio.Reader
	max int
}

// NewReader returns a Reader that refuses requests longer than max bytes
// (terminator included). max <= 0 means DefaultMaxSize.
func NewReader(r *bufio.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxSize
	}
	return &Reader{r: r, max: max}
}

// ReadRequest reads one request and parses it. raw is every byte consumed
// from the stream for it (the complete request on success), returned even
// with an error so that the caller can keep it as evidence.
//
// At a clean end of stream before any byte ReadRequest returns io.EOF. A
// stream that ends inside a request gives an *Error wrapping
// io.ErrUnexpectedEOF; a request or literal larger than the maximum gives an
// *Error wrapping ErrTooLarge, detected before the oversized data is read or
// stored. After ErrTooLarge, ErrMalformed or a read error the stream is out
// of step: reply NO and close the connection.
func (r *Reader) ReadRequest() (raw []byte, req *Request, err error) {
	buf, err := r.scan()
	if err != nil {
		return buf, nil, err
	}
	req, err = Parse(buf)
	return buf, req, err
}

// scan reads up to and including the line break that ends a request at
// nesting depth zero, outside quoted strings and literals. It checks only
// what it needs to find that end; Parse checks the rest.
func (r *Reader) scan() ([]byte, error) {
	buf := make([]byte, 0, min(512, r.max))
	var (
		depth    int
		inQuote  bool
		escaped  bool
		tokStart = true // a '{' here starts a literal
	)
	for {
		c, err := r.r.ReadByte()
		if err != nil {
			return buf, r.readErr(buf, err)
		}
		if len(buf) >= r.max {
			return buf, &Error{Offset: len(buf), Msg: "request longer than the limit", Err: ErrTooLarge}
		}
		buf = r.appendByte(buf, c)
		if inQuote {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inQuote = false
			case c == '\r' || c == '\n':
				return buf, &Error{Offset: len(buf) - 1, Msg: "line break inside a quoted string", Err: ErrMalformed}
			}
			continue
		}
		switch c {
		case '"':
			inQuote, tokStart = true, false
		case '(':
			depth++
			if depth > maxDepth {
				return buf, &Error{Offset: len(buf) - 1, Msg: "lists nested too deeply", Err: ErrMalformed}
			}
			tokStart = true
		case ')':
			depth--
			if depth < 0 {
				return buf, &Error{Offset: len(buf) - 1, Msg: "unbalanced ')'", Err: ErrMalformed}
			}
			tokStart = false
		case ' ':
			tokStart = true
		case '\n':
			if depth > 0 {
				return buf, &Error{Offset: len(buf) - 1, Msg: "line break inside a list", Err: ErrMalformed}
			}
			return buf, nil
		case '{':
			if !tokStart {
				continue
			}
			if buf, err = r.readLiteral(buf); err != nil {
				return buf, err
			}
			tokStart = false
		default:
			tokStart = false
		}
	}
}

// readLiteral reads the rest of a literal whose '{' is the last byte of buf:
// the header byte by byte, then the announced bytes in one read once the
// size is known to fit.
func (r *Reader) readLiteral(buf []byte) ([]byte, error) {
	brace := len(buf) - 1
	for {
		n, data, needMore, msg := literalHeader(buf, brace)
		if msg != "" {
			return buf, &Error{Offset: data, Msg: msg, Err: ErrMalformed}
		}
		if !needMore {
			if n > r.max-len(buf) {
				return buf, &Error{Offset: brace, Msg: "literal longer than the limit", Err: ErrTooLarge}
			}
			buf = r.grow(buf, n)
			start := len(buf)
			buf = buf[:start+n]
			got, err := io.ReadFull(r.r, buf[start:])
			buf = buf[:start+got]
			if err != nil {
				return buf, r.readErr(buf, err)
			}
			return buf, nil
		}
		c, err := r.r.ReadByte()
		if err != nil {
			return buf, r.readErr(buf, err)
		}
		if len(buf) >= r.max {
			return buf, &Error{Offset: len(buf), Msg: "request longer than the limit", Err: ErrTooLarge}
		}
		buf = r.appendByte(buf, c)
	}
}

// readErr turns an end of stream into io.EOF (nothing read) or an *Error
// wrapping io.ErrUnexpectedEOF (a request cut short).
func (r *Reader) readErr(buf []byte, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if len(buf) == 0 {
			return io.EOF
		}
		return &Error{Offset: len(buf), Msg: "stream ended inside a request", Err: io.ErrUnexpectedEOF}
	}
	return &Error{Offset: len(buf), Msg: "read failed", Err: err}
}

func (r *Reader) appendByte(buf []byte, c byte) []byte {
	if len(buf) == cap(buf) {
		buf = r.grow(buf, 1)
	}
	return append(buf, c)
}

// grow makes room for n more bytes without ever giving buf a capacity above
// the maximum (callers check that len(buf)+n fits).
func (r *Reader) grow(buf []byte, n int) []byte {
	need := len(buf) + n
	if need <= cap(buf) {
		return buf
	}
	c := max(2*cap(buf), need)
	if c > r.max {
		c = r.max
	}
	nb := make([]byte, len(buf), c)
	copy(nb, buf)
	return nb
}
