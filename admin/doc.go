// Package admin is a small web site for a cacheme.Plugin: the counters of
// every process sharing its prefix over the last hour (cacheme.FleetStats:
// totals, per function, node type and table, and the share of calls served
// from the cache per minute, drawn as SVG on the server) and those of this
// process; a listing of what the cache holds (Browse) and of one entry,
// with a preview of its value; invalidation by key, group, tag, node type
// or pattern; and the History of every invalidation made through it or
// the command line (cmd/cacheme). It needs no JavaScript and loads nothing
// from elsewhere.
//
// Handler (or New, which also returns configuration errors) returns an
// http.Handler that the application mounts wherever it likes; it never
// registers itself on http.DefaultServeMux and never listens. Its links
// and form actions are relative, so it works at any path, for example
// under a prefix:
//
//	mux.Handle("/cache/", http.StripPrefix("/cache", admin.Handler(p, admin.Options{
//		Authorize:    authorize, // or BasicAuth
//		AllowedHosts: []string{"admin.example.com"},
//		DB:           db, Dialect: migrations.Postgres,
//	})))
//
// # Authorization
//
// The handler serves nothing until Options says how requests are
// authorized, with exactly one of:
//
//   - Authorize, a function of the application asked about every request
//     and the Action it asks for (ActionView, ActionBrowse,
//     ActionInvalidateKey, ActionInvalidateGroup, ActionInvalidateTag,
//     ActionInvalidateNode, ActionInvalidatePattern), which names the
//     actor for the log or refuses with an error (403): a role check per
//     action;
//   - BasicAuth, one user and password, compared in constant time (401
//     with a challenge otherwise); the actor is the user;
//   - InsecureNoAuth, which admits everyone who reaches the handler, for
//     an application that checks every request before it does.
//
// Without one, New returns an error wrapping ErrNoAuth and Handler's
// handler answers every request with 500 saying so. Options.ReadOnly
// refuses every action that changes state with 403 and offers no forms.
//
// # Requests from elsewhere
//
// Every request, GET included, whose Host header is not one of
// Options.AllowedHosts (by default localhost, 127.0.0.1 and [::1], any
// port) is refused with 403: a foreign name that resolves to the server
// (DNS rebinding) gets nothing. Every POST must carry the CSRF token that
// the page's forms hold in a hidden field, an HMAC of the actor under a
// key of the handler's (random, or Options.CSRFKey to share it between
// processes); without a valid one it is refused with 403. A POST that a
// browser marks as coming from another site is refused with 403 as well: a
// Sec-Fetch-Site header other than "same-origin", an Origin header that
// does not match the Host, or, without an Origin, a Referer that does not.
//
// # Requests
//
// The handler answers:
//
//	GET  /            the overview (ActionView)
//	GET  /history     every logged invalidation, newest first, HistoryRows a
//	                  page (?before=<id>; ActionView)
//	GET  /browse      the entries, BrowseRows a page, by glob (?match=),
//	                  tag (?tag=) or group (?group=), and ?cursor= for the
//	                  next page (ActionBrowse)
//	GET  /entry       one entry (?key=; ActionBrowse)
//	POST /invalidate  form fields csrf, kind ("tag", "group", "key", "node"
//	                  or "pattern") and target; invalidates, logs, and
//	                  redirects (303) to the overview with the result in the
//	                  query (?done=tag:books:3)
//
// A pattern (a glob over keys, confined to the prefix; see
// cacheme.Plugin.InvalidatePattern) is first only counted: the answer (200)
// shows the count and a form that repeats the request with confirm=yes. A
// pattern that covers the whole namespace ("*") also needs all=yes, a
// checkbox of that form. A tag or node type need not be registered in the
// serving process: one stored by other processes (a page served by the
// command line) is invalidated as Redis holds it.
//
// Bad input is answered with 400 and a plain-text message before anything
// runs, the authorizer included: invalid UTF-8 or a control character
// (NUL, newline, escape, DEL, C1) in any field name or value, a field given
// twice, an unknown kind, an empty target. So are a tag the plugin does not
// know and an invalid key, before anything is invalidated.
//
// # The log
//
// With Options.DB set, every invalidation writes a row to the
// cacheme_invalidations table (created by migrations.Up): who (the actor),
// when, what (kind and target) and how many entries it hit. The overview
// shows the last LogRows rows, History all of them. The row and the invalidation succeed or fail together:
// in one transaction the row is inserted, the invalidation runs, its count
// is recorded and the transaction commits. If the row cannot be inserted
// nothing is invalidated; if the invalidation fails (Redis is down: 503)
// the row is rolled back. Only when the database fails between the
// invalidation and the commit is an invalidation left unlogged, and the
// answer (500) says so. (An invalidation that fails half way may have
// dropped some entries; that is harmless, they are recomputed.)
package admin
