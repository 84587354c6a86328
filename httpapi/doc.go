// Package httpapi serves Bonnie's e-discovery queries (package
// sink/discovery) over HTTP as JSON, to authenticated principals only,
// each seeing what they may, every request recorded. bonnied serves it
// with --http ADDR --http-tokens FILE.
//
// It lives at the module root, not under sink/discovery, because it is
// not a sink and not part of the index: it is the door people use to
// reach the record (authentication, authorisation, audit), which other
// read-only answers (the archive, restores) may go through later. It
// only reads the discovery index and only appends through the engine.
//
// # Endpoints
//
// All are GET and answer JSON in the shapes of the bonnie command line's
// --json (the discovery package's types), with redaction added:
//
//	/v1/history/message/{message-id}        discovery.Index.Message (Message-ID with or without <>, URL-escaped)
//	/v1/history/folder/{folder}[?messages=true]   discovery.Index.Folder (admin-namespace name, any name it had, or uniqueid)
//	/v1/history/user/{login-or-id}          discovery.Index.Person and Sessions: {query, person, entries, sessions}
//	/v1/access?folder=F[&at=T]              discovery.Index.WhoCouldRead (T RFC 3339, default now)
//	/v1/access?user=P[&at=T]                discovery.Index.ReadableBy
//	/v1/objects/{uid}[?rev=N | ?diff=A,B]   discovery.Index.Object, RevisionContent, Diff
//	/v1/search?custodian=&folder=&from=&to=&type=&actor=&sender=&recipient=&subject=&messageId=&text=&limit=
//	/v1/whoami                              the principal, and for a user the person the log knows
//
// Errors are {"error": "...", "status": N}: 400 for a bad parameter, 401
// without a valid token, 403 for a question the principal may not ask,
// 404 when the index knows nothing that matches (or has no body for a
// revision), 503 when the query could not be recorded.
//
// # Authentication
//
// Every request carries "Authorization: Bearer TOKEN"; anything else,
// including unknown paths, gets 401 with a WWW-Authenticate challenge
// (RFC 6750) and nothing else. Tokens are 256 random bits (NewToken;
// "bonnie api token" prints one once). The tokens file (Tokens) holds
// only their SHA-256, one line per token:
//
//	sha256:HEX ROLE PRINCIPAL [expires=RFC3339]
//
// A presented token is hashed and compared with every line in constant
// time. The file is re-read when it changes: deleting a line revokes the
// token at once; an expired token is refused. Serve the API on loopback
// or behind TLS (bonnied --http-cert/--http-key): a bearer token is a
// password.
//
// # Authorisation
//
// An auditor sees everything. A user is bound to the person the log
// knows by the line's principal (a login, alias, address or persistent
// id; discovery.Index.FindPerson), and sees an entry of a timeline when
//
//   - they did it themselves (their own logins, reads, queries), or
//   - it happened in their own mailbox (they are the folder's owner), or
//   - they could read the folder at the time of the entry: the ACL in
//     force then and the identities and group members captured with it
//     (discovery.Index.WhoCouldRead, and ReadableBy for groups whose
//     members were not captured) grant them "r".
//
// Other entries come back redacted, not missing: their position and time
// with "redacted": true, so that a user sees there is more they may not
// see. Of a copy or a move between a folder they could read and one they
// could not, the other folder is left out. A message place, a folder name
// or an object revision is redacted in the same way when no entry they
// may see shows it; a revision's content and a diff need every revision
// involved to be visible (403 otherwise).
//
// Questions about others are refused with 403: a user may ask the
// history of a person and which folders a person could read only about
// themselves, and who could read a folder only for a folder they could
// read at that time. A user's search returns only the hits they may
// see (header Bonnie-Filtered: true): redacted hits would tell them that
// mail they may not read matches words of their choosing.
//
// # Audit
//
// Every authenticated request is recorded, before it is answered, as a
// vnd.bonnie.Query event (discovery.QueryEvent) appended through the
// engine (Options.Recorder, source "http-api"): its user is the
// principal, its service "bonnie-api", its clientIP the caller's address,
// and it names the command, the path, the parameters, the role and the
// token's id (the start of its SHA-256). If it cannot be recorded, the
// answer is 503 and nothing is answered. Refusals of authenticated
// requests (400, 403, 404 of an unknown path) are recorded too, with
// "refused": {status, reason}. Requests without a valid token are only
// logged (slog, with the remote address and the reason) and counted
// (Server.Stats): recording them would let anyone who reaches the port
// write to the evidence log.
package httpapi
