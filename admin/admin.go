package admin

import (
	"bytes"
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
	// LogRows is how many log rows the page shows, newest first.
	LogRows = 50

	// maxForm bounds the body of a POST.
	maxForm = 64 << 10
)

// Form kinds, and the names of the form fields.
const (
	kindTag   = "tag"
	kindGroup = "group"
	kindKey   = "key"

	fieldKind   = "kind"
	fieldTarget = "target"
	fieldCSRF   = "csrf"
)

//go:embed templates/*.html
var templates embed.FS

var page = template.Must(template.ParseFS(templates, "templates/page.html"))

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
	case "/":
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
		actor, ok := h.auth.check(w, r, ActionView)
		if !ok {
			return
		}
		h.page(w, r, q, actor)
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
// token. Then the log row and the invalidation succeed or fail together.
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
	for _, f := range []string{fieldKind, fieldTarget, fieldCSRF} {
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
		http.Error(w, fmt.Sprintf("bad kind %q: want tag, group or key", kind), http.StatusBadRequest)
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

	n, err := h.run(r.Context(), actor, kind, target)
	if err != nil {
		var lerr *logError
		switch {
		case errors.As(err, &lerr) && lerr.invalidated:
			http.Error(w, fmt.Sprintf("invalidated %s %q (%d entries), but the log row could not be written: %v", kind, target, n, lerr.err), http.StatusInternalServerError)
		case lerr != nil:
			http.Error(w, fmt.Sprintf("nothing invalidated: the log row for %s %q could not be written: %v", kind, target, lerr.err), http.StatusInternalServerError)
		default:
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, cacheme.ErrUnknownTag), errors.Is(err, cacheme.ErrInvalidKey):
				code = http.StatusBadRequest
			case errors.Is(err, cacheme.ErrRedis):
				code = http.StatusServiceUnavailable
			}
			msg := fmt.Sprintf("invalidate %s %q: %v", kind, target, err)
			if h.opts.DB != nil {
				msg += " (nothing logged)"
			}
			http.Error(w, msg, code)
		}
		return
	}
	done := kind + ":" + target + ":" + strconv.Itoa(n)
	redirect(w, "./?done="+url.QueryEscape(done), http.StatusSeeOther)
}

// logError is a failure to write the log row; invalidated says whether
// the invalidation had already run (the row's update or the commit
// failed).
type logError struct {
	err         error
	invalidated bool
}

func (e *logError) Error() string { return "admin: log: " + e.err.Error() }
func (e *logError) Unwrap() error { return e.err }

// run invalidates target and logs it in one transaction: insert the row,
// invalidate, record the count, commit. If the insert fails nothing is
// invalidated; if the invalidation fails the row is rolled back. (Only a
// failure of the last update or of the commit, after Redis has been
// written, leaves an invalidation without its row; it is reported.)
func (h *handler) run(ctx context.Context, actor, kind, target string) (int, error) {
	// A client that goes away must not cancel the transaction between
	// the invalidation and the commit.
	ctx = context.WithoutCancel(ctx)
	if h.opts.DB == nil {
		return h.do(ctx, kind, target)
	}
	tx, err := h.opts.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, &logError{err: err}
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	insert, update := "INSERT INTO "+migrations.InvalidationsTable+" (created_at, actor, kind, target, entries) VALUES (?, ?, ?, ?, 0) RETURNING id",
		"UPDATE "+migrations.InvalidationsTable+" SET entries = ? WHERE id = ?"
	if h.opts.Dialect == migrations.Postgres {
		insert, update = "INSERT INTO "+migrations.InvalidationsTable+" (created_at, actor, kind, target, entries) VALUES ($1, $2, $3, $4, 0) RETURNING id",
			"UPDATE "+migrations.InvalidationsTable+" SET entries = $1 WHERE id = $2"
	}
	var id int64
	if err := tx.QueryRowContext(ctx, insert, h.opts.Now().UTC(), actor, kind, target).Scan(&id); err != nil {
		return 0, &logError{err: err}
	}
	n, err := h.do(ctx, kind, target)
	if err != nil {
		return n, err
	}
	if _, err := tx.ExecContext(ctx, update, n, id); err != nil {
		return n, &logError{err: err, invalidated: true}
	}
	if err := tx.Commit(); err != nil {
		return n, &logError{err: err, invalidated: true}
	}
	return n, nil
}

// do runs one invalidation.
func (h *handler) do(ctx context.Context, kind, target string) (int, error) {
	switch kind {
	case kindTag:
		return h.p.InvalidateTag(ctx, target)
	case kindGroup:
		return h.p.InvalidateGroups(ctx, target)
	default:
		return h.p.InvalidateKeys(ctx, target)
	}
}

// pageData is what templates/page.html renders.
type pageData struct {
	Prefix   string
	Now      string
	Flash    string
	Columns  []string // counter names
	Total    []int64  // overall counters, in Columns order
	Tags     []tagRow // registered tags, sorted
	Logged   bool     // Options.DB is set
	Log      []logRow // newest first
	LogErr   string   // why the log could not be read
	ReadOnly bool     // Options.ReadOnly
	CanTag   bool     // the actor may invalidate tags
	Kinds    []string // the kinds the free form offers (those the actor may invalidate)
	CSRF     string   // the actor's CSRF token
}

type tagRow struct {
	Name   string
	Counts []int64
}

type logRow struct {
	Time    string
	Actor   string
	Kind    string
	Target  string
	Entries int
}

func (h *handler) page(w http.ResponseWriter, r *http.Request, q url.Values, actor string) {
	st := h.p.Stats()
	d := pageData{
		Prefix:   h.p.Settings().Prefix,
		Now:      formatTime(h.opts.Now()),
		Flash:    flash(q.Get("done")),
		Columns:  counterNames,
		Total:    counterValues(st.Total),
		Logged:   h.opts.DB != nil,
		ReadOnly: h.opts.ReadOnly,
		CSRF:     csrfToken(h.key, actor),
	}
	if !h.opts.ReadOnly {
		d.CanTag = h.auth.allows(r, ActionInvalidateTag)
		for _, k := range []string{kindGroup, kindKey} {
			if h.auth.allows(r, actionOf[k]) {
				d.Kinds = append(d.Kinds, k)
			}
		}
	}
	for _, t := range h.p.Tags() {
		d.Tags = append(d.Tags, tagRow{Name: t, Counts: counterValues(st.Tags[t])})
	}
	if d.Logged {
		rows, err := h.readLog(r.Context())
		if err != nil {
			d.LogErr = err.Error()
		}
		d.Log = rows
	}
	var b bytes.Buffer
	if err := page.Execute(&b, d); err != nil {
		http.Error(w, "admin: render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	_, _ = w.Write(b.Bytes())
}

// readLog returns the newest LogRows rows of the log.
func (h *handler) readLog(ctx context.Context) ([]logRow, error) {
	q := "SELECT created_at, actor, kind, target, entries FROM " + migrations.InvalidationsTable +
		" ORDER BY id DESC LIMIT " + strconv.Itoa(LogRows)
	rows, err := h.opts.DB.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []logRow
	for rows.Next() {
		var (
			t   dbTime
			row logRow
		)
		if err := rows.Scan(&t, &row.Actor, &row.Kind, &row.Target, &row.Entries); err != nil {
			return out, err
		}
		row.Time = formatTime(t.Time)
		out = append(out, row)
	}
	return out, rows.Err()
}

// dbTime scans a timestamp whichever way the driver returns it: a
// time.Time, or text (SQLite drivers that do not parse timestamps).
type dbTime struct{ time.Time }

// Scan implements sql.Scanner.
func (t *dbTime) Scan(v any) error {
	switch v := v.(type) {
	case time.Time:
		t.Time = v
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	case nil:
		t.Time = time.Time{}
		return nil
	}
	return fmt.Errorf("admin: cannot read %T as a time", v)
}

var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05",
}

func (t *dbTime) parse(s string) error {
	s = strings.TrimSuffix(s, " +0000 UTC")
	for _, l := range timeLayouts {
		if v, err := time.Parse(l, s); err == nil {
			t.Time = v
			return nil
		}
	}
	return fmt.Errorf("admin: cannot read %q as a time", s)
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
	if !ok || i <= 0 || (kind != kindTag && kind != kindGroup && kind != kindKey) {
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
