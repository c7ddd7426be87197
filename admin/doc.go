// Package admin is a small web page for a cacheme.Plugin: its counters,
// overall and per tag, a button to invalidate each tag, a form to
// invalidate an invalidation group or a key, and a log of the
// invalidations made through it.
//
// Handler returns an http.Handler that the application mounts wherever it
// likes; it never registers itself on http.DefaultServeMux and never
// listens. Its links and form actions are relative, so it works at any
// path, for example under a prefix:
//
//	mux.Handle("/cache/", http.StripPrefix("/cache", requireStaff(admin.Handler(p, opts))))
//
// Authentication and authorization are the mounting application's job:
// the handler lets anyone who reaches it invalidate the cache, so mount it
// behind the application's own login check, and name the person in
// Options.Actor so the log says who did what.
//
// The handler answers:
//
//	GET  /            the page
//	POST /invalidate  form fields kind ("tag", "group" or "key") and target;
//	                  invalidates, logs, and redirects (303) to the page
//	                  with the result in the query (?done=tag:books:3)
//
// Bad input (an unknown kind, an empty target, a tag the plugin does not
// know, an invalid key) is answered with 400 and a plain-text message. A
// POST that a browser marks as coming from another site (a Sec-Fetch-Site
// header other than "same-origin", or an Origin header that does not match
// the request's Host) is refused with 403, so another site cannot make a
// signed-in user's browser invalidate the cache. Clients that send neither
// header, such as curl, are not browsers and are let through.
//
// With Options.DB set, every invalidation writes a row to the
// cacheme_invalidations table (created by migrations.Up) and the page shows
// the last 50 rows. Unlike django-cacheme's Invalidation admin, there is no
// pattern that wipes the whole namespace: each form names exactly one tag,
// group or key.
package admin
