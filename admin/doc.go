// Package admin is a small web page for a cacheme.Plugin: its counters,
// overall and per tag, a button to invalidate each tag, a form to
// invalidate an invalidation group or a key, and a log of the
// invalidations made through it.
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
//     and the Action it asks for (ActionView, ActionInvalidateKey,
//     ActionInvalidateGroup, ActionInvalidateTag), which names the actor
//     for the log or refuses with an error (403);
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
//	GET  /            the page (ActionView)
//	POST /invalidate  form fields csrf, kind ("tag", "group" or "key") and
//	                  target; invalidates, logs, and redirects (303) to the
//	                  page with the result in the query (?done=tag:books:3)
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
// cacheme_invalidations table (created by migrations.Up) and the page shows
// the last 50 rows. The row and the invalidation succeed or fail together:
// in one transaction the row is inserted, the invalidation runs, its count
// is recorded and the transaction commits. If the row cannot be inserted
// nothing is invalidated; if the invalidation fails (Redis is down: 503)
// the row is rolled back. Only when the database fails between the
// invalidation and the commit is an invalidation left unlogged, and the
// answer (500) says so. (An invalidation that fails half way may have
// dropped some entries; that is harmless, they are recomputed.)
//
// Unlike django-cacheme's Invalidation admin, there is no pattern that
// wipes the whole namespace: each form names exactly one tag, group or key.
package admin
