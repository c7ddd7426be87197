package admin

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/history"
	"github.com/gormcacheme/cacheme/migrations"
)

// Options configures Handler and New.
//
// Exactly one of Authorize, BasicAuth and InsecureNoAuth must be set: until
// the application says how requests are authorized, the handler serves
// nothing (New returns ErrNoAuth, and Handler's handler answers every
// request with 500 saying so).
type Options struct {
	// Authorize decides, for every request, whether it may do action a,
	// and names the person making it (the actor) for the log. A non-nil
	// error refuses the request with 403 and the error's text. It is
	// called once per request for the action the request asks for, and,
	// when the page is shown, once more for each other action, to offer
	// only the forms the actor may submit; it should have no side
	// effects. It must name the same actor for one person whatever the
	// action: the CSRF token of the forms is bound to the actor. It
	// should refuse actions it does not know (later versions add some).
	Authorize func(r *http.Request, a Action) (actor string, err error)

	// BasicAuth, if set, admits the requests carrying these HTTP basic
	// credentials, for every action, and names the user as the actor;
	// others are answered with 401 and a WWW-Authenticate challenge.
	// Serve the page over HTTPS only: basic auth sends the password in
	// the clear.
	BasicAuth *BasicAuth

	// InsecureNoAuth admits every request that reaches the handler, for
	// every action, with the actor "". Set it only when the application
	// already authenticates and authorizes every request before the
	// handler sees it (and then prefer Authorize, which also names the
	// actor in the log).
	InsecureNoAuth bool

	// ReadOnly refuses every action that changes state with 403, and
	// the page offers none. Set it to show the counters and the log
	// only.
	ReadOnly bool

	// AllowedHosts are the names the handler answers to: every request,
	// GET included, whose Host header is not one of them is refused with
	// 403. This defeats DNS rebinding, where a foreign site's name points
	// at the server and the browser, seeing one origin, lets the foreign
	// page read and submit the forms. An entry without a port ("localhost",
	// "admin.example.com", "[::1]") matches any port; one with a port
	// ("admin.example.com:8443") only that port, as the Host header writes
	// it. Names are compared case-insensitively. If empty, defaults to
	// the loopback names only: localhost, 127.0.0.1 and [::1], any port.
	// Behind a reverse proxy, list the public name(s) the proxy passes on
	// in Host.
	AllowedHosts []string

	// CSRFKey, if set, is the key (at least 32 bytes, secret) the CSRF
	// tokens of the forms are computed with. Set it to the same value in
	// every process serving the page behind one load balancer, so that a
	// page from one is accepted by another. If nil, each handler makes a
	// random key of its own: tokens stop being valid when the process
	// restarts (reloading the page gives new ones).
	CSRFKey []byte

	// DB, if set, holds the cacheme_invalidations table (see
	// migrations.Up): every invalidation writes a row to it, in the same
	// transaction, and the page shows the last 50. If nil, nothing is
	// logged or shown.
	DB *sql.DB

	// Dialect is DB's dialect, migrations.Postgres or migrations.SQLite.
	// It is required when DB is set.
	Dialect string

	// Now, if set, is the clock for log rows and the page. If nil,
	// defaults to time.Now.
	Now func() time.Time
}

// Limits.
const (
	// LogRows is how many log rows the overview shows, newest first;
	// History shows them all, HistoryRows a page.
	LogRows = 10

	// HistoryRows is how many rows a page of History holds.
	HistoryRows = 50

	// BrowseRows is how many entries a page of Browse holds (at least,
	// unless the listing ends; see cacheme.ScanOptions.Limit).
	BrowseRows = 50

	// maxForm bounds the body of a POST.
	maxForm = 64 << 10
)

// Form kinds, and the names of the form fields.
const (
	kindTag     = "tag"
	kindGroup   = "group"
	kindKey     = "key"
	kindNode    = "node"
	kindPattern = "pattern"

	fieldKind    = "kind"
	fieldTarget  = "target"
	fieldCSRF    = "csrf"
	fieldConfirm = "confirm" // "yes": run the pattern whose dry run was shown
	fieldAll     = "all"     // "yes": the pattern covers the whole namespace, and that is meant
)

//go:embed templates/*.html
var templates embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"ms": func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return d.Round(time.Second).String()
	},
	"button": func(csrf, kind, target string) formButton { return formButton{csrf, kind, target} },
}).ParseFS(templates, "templates/*.html"))

// formButton is what the template "tagform" renders: a button that
// invalidates one tag or node type.
type formButton struct{ CSRF, Kind, Target string }

// handler serves the admin page. It is safe for concurrent use.
type handler struct {
	p     *cacheme.Plugin
	opts  Options
	auth  authorizer
	hosts []hostRule
	key   []byte // the CSRF key
}

// broken answers every request with 500 and a configuration error.
type broken struct{ err error }

func (b broken) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	setHeaders(w)
	http.Error(w, b.err.Error()+" (the admin page is not served until this is fixed)", http.StatusInternalServerError)
}

// Handler returns the admin page of p as an http.Handler, configured by
// opts; see the package documentation for what it serves. It is safe for
// concurrent use. If opts are not valid (see New), the handler answers
// every request with 500 and says what is wrong; use New to get the error
// at start-up instead.
func Handler(p *cacheme.Plugin, opts Options) http.Handler {
	h, err := New(p, opts)
	if err != nil {
		return broken{err}
	}
	return h
}

// New is Handler, but returns an error instead of a handler that serves
// it: for a nil plugin; when Options says nothing about authorization
// (wrapping ErrNoAuth) or more than one thing; for BasicAuth without
// credentials, a bad AllowedHosts entry, a CSRFKey shorter than 32 bytes,
// or a DB without a known Dialect (wrapping migrations.ErrUnknownDialect).
func New(p *cacheme.Plugin, opts Options) (http.Handler, error) {
	if p == nil {
		return nil, errors.New("admin: nil *cacheme.Plugin")
	}
	h := &handler{p: p, opts: opts}
	var err error
	if h.auth, err = newAuthorizer(opts); err != nil {
		return nil, err
	}
	if h.hosts, err = parseHostRules(opts.AllowedHosts); err != nil {
		return nil, err
	}
	if opts.DB != nil {
		if err := migrations.CheckDialect(opts.Dialect); err != nil {
			return nil, fmt.Errorf("admin: Options.Dialect: %w", err)
		}
	}
	switch {
	case opts.CSRFKey == nil:
		h.key = make([]byte, csrfKeySize)
		_, _ = rand.Read(h.key) // never fails (crypto/rand crashes the program instead)
	case len(opts.CSRFKey) < csrfKeySize:
		return nil, fmt.Errorf("admin: Options.CSRFKey has %d bytes; want at least %d", len(opts.CSRFKey), csrfKeySize)
	default:
		h.key = slices.Clone(opts.CSRFKey)
	}
	if h.opts.Now == nil {
		h.opts.Now = time.Now
	}
	return h, nil
}

func setHeaders(w http.ResponseWriter) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setHeaders(w)
	if !hostAllowed(h.hosts, r.Host) {
		http.Error(w, fmt.Sprintf("admin: Host %s is not one of Options.AllowedHosts", strconv.QuoteToASCII(r.Host)), http.StatusForbidden)
		return
	}
	switch r.URL.Path {
	case "":
		// Mounted with StripPrefix("/cache", h) and asked for "/cache":
		// relative links need the trailing slash.
		target := path.Base(originalPath(r)) + "/"
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		redirect(w, "./"+target, http.StatusMovedPermanently)
	case "/", "/browse", "/entry", "/history":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err == nil {
			err = checkForm(q)
		}
		if err != nil {
			http.Error(w, "bad query: "+err.Error(), http.StatusBadRequest)
			return
		}
		action := ActionView
		if r.URL.Path == "/browse" || r.URL.Path == "/entry" {
			action = ActionBrowse
		}
		actor, ok := h.auth.check(w, r, action)
		if !ok {
			return
		}
		v := h.view(r, actor, r.URL.Path)
		switch r.URL.Path {
		case "/":
			h.overview(w, r, q, v)
		case "/browse":
			h.browse(w, r, q, v)
		case "/entry":
			h.entry(w, r, q, v)
		default:
			h.history(w, r, q, v)
		}
	case "/invalidate":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		h.invalidate(w, r)
	default:
		http.NotFound(w, r)
	}
}

// originalPath is the request's path before any StripPrefix.
func originalPath(r *http.Request) string {
	if u, err := url.ParseRequestURI(r.RequestURI); err == nil && u.Path != "" {
		return u.Path
	}
	return "/"
}

// redirect answers with a Location relative to the request's URL as the
// client sent it. (http.Redirect would resolve it against r.URL.Path, which
// StripPrefix has shortened.)
func redirect(w http.ResponseWriter, location string, code int) {
	w.Header().Set("Location", location)
	w.WriteHeader(code)
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, "method not allowed; use "+allow, http.StatusMethodNotAllowed)
}

// invalidate serves POST /invalidate. The checks run in this order, and
// nothing changes unless all pass: same site, a well-formed form of valid
// text, a known kind and a target, the authorizer, ReadOnly, the CSRF
// token. A pattern without confirm=yes is only counted (the dry run, shown
// with the form that confirms it); one that covers the whole namespace
// also needs all=yes. Then the log row and the invalidation succeed or
// fail together.
func (h *handler) invalidate(w http.ResponseWriter, r *http.Request) {
	if why := crossSite(r); why != "" {
		http.Error(w, "cross-site request refused: "+why, http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		code := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "bad form: "+err.Error(), code)
		return
	}
	if err := checkForm(r.Form); err != nil {
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	for _, f := range []string{fieldKind, fieldTarget, fieldCSRF, fieldConfirm, fieldAll} {
		if n := len(r.PostForm[f]); n > 1 {
			http.Error(w, fmt.Sprintf("bad form: field %q given %d times", f, n), http.StatusBadRequest)
			return
		}
	}
	kind := r.PostForm.Get(fieldKind)
	target := strings.TrimSpace(r.PostForm.Get(fieldTarget))
	action, ok := actionOf[kind]
	switch {
	case !ok:
		http.Error(w, fmt.Sprintf("bad kind %q: want tag, group, key, node or pattern", kind), http.StatusBadRequest)
		return
	case target == "":
		http.Error(w, "empty target: name the "+kind+" to invalidate", http.StatusBadRequest)
		return
	}
	actor, ok := h.auth.check(w, r, action)
	if !ok {
		return
	}
	if h.opts.ReadOnly {
		http.Error(w, fmt.Sprintf("admin: %s refused: the page is read-only (Options.ReadOnly)", action), http.StatusForbidden)
		return
	}
	if !csrfValid(h.key, actor, r.PostForm.Get(fieldCSRF)) {
		http.Error(w, "admin: missing or invalid CSRF token; reload the page and submit its form again", http.StatusForbidden)
		return
	}
	if kind == kindPattern {
		if r.PostForm.Get(fieldConfirm) != "yes" {
			h.dryRun(w, r, actor, target)
			return
		}
		if cacheme.PatternCoversAll(target) && r.PostForm.Get(fieldAll) != "yes" {
			http.Error(w, fmt.Sprintf("pattern %q covers the whole namespace: confirm it (all=yes) to invalidate everything", target), http.StatusBadRequest)
			return
		}
	}

	n, err := h.run(r.Context(), actor, kind, target)
	if err != nil {
		var lerr *history.Error
		switch {
		case errors.As(err, &lerr) && lerr.Invalidated:
			http.Error(w, fmt.Sprintf("invalidated %s %q (%d entries), but the log row could not be written: %v", kind, target, n, lerr.Err), http.StatusInternalServerError)
		case lerr != nil:
			http.Error(w, fmt.Sprintf("nothing invalidated: the log row for %s %q could not be written: %v", kind, target, lerr.Err), http.StatusInternalServerError)
		default:
			msg := fmt.Sprintf("invalidate %s %q: %v", kind, target, err)
			if h.opts.DB != nil {
				msg += " (nothing logged)"
			}
			http.Error(w, msg, errorCode(err))
		}
		return
	}
	done := kind + ":" + target + ":" + strconv.Itoa(n)
	redirect(w, "./?done="+url.QueryEscape(done), http.StatusSeeOther)
}

// errorCode is the status of an error of the plugin: bad input 400, Redis
// failing 503.
func errorCode(err error) int {
	switch {
	case errors.Is(err, cacheme.ErrUnknownTag), errors.Is(err, cacheme.ErrInvalidKey),
		errors.Is(err, cacheme.ErrInvalidSpec), errors.Is(err, errUnknownNode):
		return http.StatusBadRequest
	case errors.Is(err, cacheme.ErrRedis):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// run invalidates target and, with Options.DB, logs it in one transaction
// (see history.Log.Run).
func (h *handler) run(ctx context.Context, actor, kind, target string) (int, error) {
	if h.opts.DB == nil {
		return h.do(context.WithoutCancel(ctx), kind, target)
	}
	l := history.Log{DB: h.opts.DB, Dialect: h.opts.Dialect, Now: h.opts.Now}
	return l.Run(ctx, actor, kind, target, func(ctx context.Context) (int, error) { return h.do(ctx, kind, target) })
}

// errUnknownNode is the error of kind=node for a name that is no node type.
var errUnknownNode = errors.New("unknown node type")

// do runs one invalidation. A tag or node type need not be registered in
// this process: one that other processes store under is invalidated as
// Redis holds it (cacheme.Plugin.InvalidateStoredTag).
func (h *handler) do(ctx context.Context, kind, target string) (int, error) {
	switch kind {
	case kindTag:
		return h.p.InvalidateStoredTag(ctx, target)
	case kindNode:
		if h.p.TagKind(target) != cacheme.KindNode {
			f, err := h.p.FleetStats(ctx)
			if err != nil {
				return 0, err
			}
			if f.Kinds[target] != cacheme.KindNode {
				return 0, fmt.Errorf("%w %q (no process registered it in the last hour)", errUnknownNode, target)
			}
		}
		return h.p.InvalidateStoredTag(ctx, target)
	case kindGroup:
		return h.p.InvalidateGroups(ctx, target)
	case kindPattern:
		return h.p.InvalidatePattern(ctx, target, false, nil)
	default:
		return h.p.InvalidateKeys(ctx, target)
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// flash turns the result of a POST (kind:target:entries) into a sentence,
// or "" if done is not one.
func flash(done string) string {
	kind, rest, ok := strings.Cut(done, ":")
	i := strings.LastIndexByte(rest, ':')
	if _, known := actionOf[kind]; !ok || i <= 0 || !known {
		return ""
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 0 {
		return ""
	}
	unit := "entries"
	if n == 1 {
		unit = "entry"
	}
	return fmt.Sprintf("Invalidated %s %q: %d %s.", kind, rest[:i], n, unit)
}

// counterNames are the fields of cacheme.Counters in words ("HerdWaits"
// is "herd waits"), in declaration order: every counter the plugin has is
// shown, including any added later.
var counterNames = func() []string {
	t := reflect.TypeFor[cacheme.Counters]()
	var out []string
	for f := range t.Fields() {
		if !f.IsExported() || f.Type.Kind() != reflect.Int64 {
			continue
		}
		var b strings.Builder
		for i, c := range f.Name {
			if unicode.IsUpper(c) && i > 0 {
				b.WriteByte(' ')
			}
			b.WriteRune(unicode.ToLower(c))
		}
		out = append(out, b.String())
	}
	return out
}()

// counterValues returns c's counters in counterNames order.
func counterValues(c cacheme.Counters) []int64 {
	v := reflect.ValueOf(c)
	out := make([]int64, 0, len(counterNames))
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && f.Type.Kind() == reflect.Int64 {
			out = append(out, v.Field(i).Int())
		}
	}
	return out
}
