package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/discovery"
)

// Source is the source name under which the API records its Query
// events (bonnie.Engine.Record), and Service the service they name.
const (
	Source  = "http-api"
	Service = "bonnie-api"
)

// Recorder appends one of Bonnie's own events; *bonnie.Engine is one.
type Recorder interface {
	Record(ctx context.Context, raw []byte, source string) (bonnie.Position, bool, error)
}

// Options configure a Server.
type Options struct {
	// Index answers the queries (required).
	Index *discovery.Index
	// Log, when set, is caught up into Index before every answer, so that
	// answers include everything in the log (and the request's own Query
	// event). Leave it nil when something else keeps the index current.
	Log bonnie.Log
	// Recorder records every request as a vnd.bonnie.Query event before
	// it is answered (required): no answer without its record.
	Recorder Recorder
	// Tokens authenticate the requests (required).
	Tokens *Tokens
	// Logger receives one line per request (default: slog.Default()).
	Logger *slog.Logger
	// Host is recorded as the host the question was asked on.
	Host string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server is the HTTP API: an http.Handler.
type Server struct {
	o   Options
	mux *http.ServeMux
	lg  *slog.Logger

	catchUp sync.Mutex

	answered, unauthenticated, refused, failed atomic.Int64
}

// Stats counts the requests a Server handled, by outcome.
type Stats struct {
	// Answered were recorded and answered (including "not found").
	Answered int64 `json:"answered"`
	// Unauthenticated were refused with 401 (logged, not recorded).
	Unauthenticated int64 `json:"unauthenticated"`
	// Refused were authenticated and refused (403, 400, 405; recorded).
	Refused int64 `json:"refused"`
	// Failed could not be answered (5xx).
	Failed int64 `json:"failed"`
}

// New returns the API over o.Index.
func New(o Options) (*Server, error) {
	if o.Index == nil || o.Recorder == nil || o.Tokens == nil {
		return nil, errors.New("httpapi: Index, Recorder and Tokens are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{o: o, mux: http.NewServeMux(), lg: o.Logger}
	s.handle("GET /v1/history/message/{msgid...}", "history message", s.historyMessage)
	s.handle("GET /v1/history/folder/{folder...}", "history folder", s.historyFolder)
	s.handle("GET /v1/history/user/{login...}", "history user", s.historyUser)
	s.handle("GET /v1/access", "access", s.access)
	s.handle("GET /v1/objects/{uid...}", "object", s.object)
	s.handle("GET /v1/search", "search", s.search)
	s.handle("GET /v1/whoami", "whoami", s.whoami)
	return s, nil
}

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	return Stats{Answered: s.answered.Load(), Unauthenticated: s.unauthenticated.Load(),
		Refused: s.refused.Load(), Failed: s.failed.Load()}
}

// call is one authenticated request.
type call struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	p       Principal
	command string
	args    map[string]any
	v       *viewer
	asked   bool // the question is recorded
}

// apiError is an answer other than 200.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

func forbidden(format string, a ...any) error {
	return &apiError{http.StatusForbidden, fmt.Sprintf(format, a...)}
}

// handler answers one call: it checks the request (errors before
// c.ask are refusals), calls c.ask to record it, then answers.
type handler func(ctx context.Context, c *call) (any, error)

func (s *Server) handle(pattern, command string, h handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c := r.Context().Value(callKey{}).(*call)
		c.command, c.r = command, r // r has the path's values
		s.serve(c, h)
	})
}

type callKey struct{}

// ServeHTTP authenticates every request before anything else: without a
// valid bearer token nothing, not even which paths exist, is answered.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	token, ok := bearer(r)
	var p Principal
	var err error
	if !ok {
		err = fmt.Errorf("%w: no bearer token", ErrBadToken)
	} else {
		p, err = s.o.Tokens.Authenticate(token, s.o.Now())
	}
	if err != nil {
		s.unauthenticated.Add(1)
		s.lg.Warn("api request refused: not authenticated", "method", r.Method, "path", r.URL.Path,
			"remote", r.RemoteAddr, "reason", err, "status", http.StatusUnauthorized)
		challenge := `Bearer realm="bonnie"`
		if ok {
			challenge += `, error="invalid_token"`
		}
		h.Set("WWW-Authenticate", challenge)
		writeJSON(w, http.StatusUnauthorized, errorBody{Error: "authentication required: a valid bearer token", Status: http.StatusUnauthorized})
		return
	}
	c := &call{s: s, w: w, r: r, p: p, args: map[string]any{}}
	c.v = &viewer{s: s, p: p}
	sw := &statusWriter{ResponseWriter: w}
	c.w = sw
	hd, pattern := s.mux.Handler(r)
	if pattern == "" {
		// Not found or method not allowed: refused, and recorded.
		status := http.StatusNotFound
		msg := "no such endpoint"
		if rec := probe(hd, r); rec == http.StatusMethodNotAllowed {
			status, msg = rec, "method not allowed"
		}
		c.command = "api"
		s.refuse(c, &apiError{status, msg})
	} else {
		s.mux.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
	}
	s.lg.Info("api request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery, "remote", r.RemoteAddr,
		"principal", p.Name, "role", p.Role, "token", p.TokenID, "status", sw.status, "duration", time.Since(start).Round(time.Microsecond))
}

// probe runs the mux's own not-found/method-not-allowed handler into a
// discarded response to learn its status.
func probe(h http.Handler, r *http.Request) int {
	pw := &statusWriter{ResponseWriter: discard{}}
	h.ServeHTTP(pw, r)
	return pw.status
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// serve runs h: refusals are recorded and answered, answers are
// recorded (by c.ask inside h) before they are written.
func (s *Server) serve(c *call, h handler) {
	ctx := c.r.Context()
	if err := s.catchUpIndex(ctx); err != nil {
		s.fail(c, err)
		return
	}
	if c.p.Role == RoleUser {
		person, err := s.o.Index.FindPerson(ctx, c.p.Name)
		if err != nil {
			s.fail(c, err)
			return
		}
		c.v.person = person
	}
	c.args["query"] = c.r.URL.Query()
	res, err := h(ctx, c)
	if !c.asked && (errors.Is(err, discovery.ErrNotFound) || errors.Is(err, discovery.ErrNoBodies)) {
		// "Not found" is an answer too: recorded first.
		if rerr := c.ask(ctx); rerr != nil {
			err = rerr
		}
	}
	asked := c.asked
	if err == nil && !asked {
		err = errors.New("httpapi: answer without record") // a programming error
	}
	var ae *apiError
	switch {
	case err == nil:
		s.answered.Add(1)
		writeJSON(c.w, http.StatusOK, res)
	case errors.As(err, &ae) && !asked:
		s.refuse(c, ae)
	case errors.Is(err, discovery.ErrNotFound) || errors.Is(err, discovery.ErrNoBodies):
		s.answered.Add(1)
		writeJSON(c.w, http.StatusNotFound, errorBody{Error: err.Error(), Status: http.StatusNotFound})
	case errors.As(err, &ae):
		s.answered.Add(1)
		writeJSON(c.w, ae.status, errorBody{Error: ae.msg, Status: ae.status})
	default:
		s.fail(c, err)
	}
}

// refuse records and answers a refusal of an authenticated request.
func (s *Server) refuse(c *call, e *apiError) {
	s.refused.Add(1)
	c.args["refused"] = map[string]any{"status": e.status, "reason": e.msg}
	s.lg.Warn("api request refused", "method", c.r.Method, "path", c.r.URL.Path, "principal", c.p.Name,
		"role", c.p.Role, "status", e.status, "reason", e.msg)
	if _, err := s.record(c); err != nil {
		s.lg.Error("the refusal could not be recorded", "err", err)
	}
	writeJSON(c.w, e.status, errorBody{Error: e.msg, Status: e.status})
}

func (s *Server) fail(c *call, err error) {
	s.failed.Add(1)
	s.lg.Error("api request failed", "method", c.r.Method, "path", c.r.URL.Path, "principal", c.p.Name, "err", err)
	status := http.StatusInternalServerError
	if errors.Is(err, errNotRecorded) {
		status = http.StatusServiceUnavailable
	}
	writeJSON(c.w, status, errorBody{Error: http.StatusText(status), Status: status})
}

var errNotRecorded = errors.New("httpapi: the query could not be recorded")

// record appends the Query event of c: the principal as actor, the
// client's address, what was asked.
func (s *Server) record(c *call) (bonnie.Position, error) {
	args := map[string]any{"method": c.r.Method, "path": c.r.URL.Path, "role": c.p.Role, "token": c.p.TokenID}
	for k, v := range c.args {
		args[k] = v
	}
	// The question is said to come from the API and from the client's
	// address.
	asked := discovery.Asked{By: c.p.Name, Command: c.command, Args: args, Host: s.o.Host,
		Nonce: uuid.NewString(), Service: Service}
	if host, port, err := net.SplitHostPort(c.r.RemoteAddr); err == nil {
		if n, err := strconv.Atoi(port); err == nil {
			asked.ClientIP, asked.ClientPort = host, n
		}
	}
	raw, err := discovery.QueryEvent(asked, s.o.Now())
	if err != nil {
		return 0, err
	}
	pos, _, err := s.o.Recorder.Record(c.r.Context(), raw, Source)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errNotRecorded, err)
	}
	return pos, nil
}

// ask records the question of an allowed request, then brings the index
// up to the log (the record included). Handlers call it once they have
// checked the request and before they compute the answer.
func (c *call) ask(ctx context.Context) error {
	if _, err := c.s.record(c); err != nil {
		return err
	}
	c.asked = true
	return c.s.catchUpIndex(ctx)
}

func (s *Server) catchUpIndex(ctx context.Context) error {
	if s.o.Log == nil {
		return nil
	}
	s.catchUp.Lock()
	defer s.catchUp.Unlock()
	_, err := s.o.Index.CatchUp(ctx, s.o.Log)
	return err
}

type errorBody struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// parseAt reads an RFC 3339 time parameter (default: now).
func (s *Server) parseAt(q url.Values, name string, def time.Time) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest("%s: want an RFC 3339 time, not %q", name, v)
	}
	return t.UTC(), nil
}
