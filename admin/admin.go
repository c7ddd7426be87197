package admin

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/migrations"
)

// Options configures Handler. The zero value is usable: no log, no actor
// names, the real clock.
type Options struct {
	// DB, if set, holds the cacheme_invalidations table (see
	// migrations.Up): every invalidation writes a row to it and the page
	// shows the last 50. If nil, nothing is logged or shown.
	DB *sql.DB

	// Dialect is DB's dialect, migrations.Postgres or migrations.SQLite.
	// It is required when DB is set.
	Dialect string

	// Actor, if set, names the person making a request, for the log (for
	// example the signed-in user of the mounting application). If nil,
	// the actor is logged as "".
	Actor func(*http.Request) string

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

// Form kinds.
const (
	kindTag   = "tag"
	kindGroup = "group"
	kindKey   = "key"
)

//go:embed templates/*.html
var templates embed.FS

var page = template.Must(template.ParseFS(templates, "templates/page.html"))

// handler serves the admin page. It is safe for concurrent use.
type handler struct {
	p    *cacheme.Plugin
	opts Options
	err  error // a configuration error: every request answers 500 with it
}

// Handler returns the admin page of p as an http.Handler, configured by
// opts; see the package documentation for what it serves. It is safe for
// concurrent use. A nil plugin, or a DB without a known Dialect, is a
// configuration error: the handler then answers every request with 500
// and says what is wrong.
func Handler(p *cacheme.Plugin, opts Options) http.Handler {
	h := &handler{p: p, opts: opts}
	if h.opts.Now == nil {
		h.opts.Now = time.Now
	}
	switch {
	case p == nil:
		h.err = errors.New("admin: nil *cacheme.Plugin")
	case opts.DB != nil:
		if err := migrations.CheckDialect(opts.Dialect); err != nil {
			h.err = fmt.Errorf("admin: Options.Dialect: %w", err)
		}
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if h.err != nil {
		http.Error(w, h.err.Error(), http.StatusInternalServerError)
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
		h.page(w, r)
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

// crossSite says why a POST looks like it comes from another site, or ""
// if it does not.
func crossSite(r *http.Request) string {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return "Sec-Fetch-Site is " + strconv.Quote(s)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Sprintf("Origin %q does not match Host %q", o, r.Host)
		}
	}
	return ""
}

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
	kind := r.PostForm.Get("kind")
	target := strings.TrimSpace(r.PostForm.Get("target"))
	switch {
	case kind != kindTag && kind != kindGroup && kind != kindKey:
		http.Error(w, fmt.Sprintf("bad kind %q: want tag, group or key", kind), http.StatusBadRequest)
		return
	case target == "":
		http.Error(w, "empty target: name the "+kind+" to invalidate", http.StatusBadRequest)
		return
	}

	ctx := r.Context()
	var (
		n   int
		err error
	)
	switch kind {
	case kindTag:
		n, err = h.p.InvalidateTag(ctx, target)
	case kindGroup:
		n, err = h.p.InvalidateGroups(ctx, target)
	case kindKey:
		n, err = h.p.InvalidateKeys(ctx, target)
	}
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, cacheme.ErrUnknownTag), errors.Is(err, cacheme.ErrInvalidKey):
			code = http.StatusBadRequest
		case errors.Is(err, cacheme.ErrRedis):
			code = http.StatusServiceUnavailable
		}
		http.Error(w, fmt.Sprintf("invalidate %s %q: %v", kind, target, err), code)
		return
	}

	if h.opts.DB != nil {
		actor := ""
		if h.opts.Actor != nil {
			actor = h.opts.Actor(r)
		}
		if err := h.log(ctx, actor, kind, target, n); err != nil {
			http.Error(w, fmt.Sprintf("invalidated %s %q (%d entries), but the log row could not be written: %v", kind, target, n, err), http.StatusInternalServerError)
			return
		}
	}
	done := kind + ":" + target + ":" + strconv.Itoa(n)
	redirect(w, "./?done="+url.QueryEscape(done), http.StatusSeeOther)
}

// log writes one row to the invalidations log.
func (h *handler) log(ctx context.Context, actor, kind, target string, entries int) error {
	q := "INSERT INTO " + migrations.InvalidationsTable + " (created_at, actor, kind, target, entries) VALUES (?, ?, ?, ?, ?)"
	if h.opts.Dialect == migrations.Postgres {
		q = "INSERT INTO " + migrations.InvalidationsTable + " (created_at, actor, kind, target, entries) VALUES ($1, $2, $3, $4, $5)"
	}
	_, err := h.opts.DB.ExecContext(ctx, q, h.opts.Now().UTC(), actor, kind, target, entries)
	return err
}

// pageData is what templates/page.html renders.
type pageData struct {
	Prefix  string
	Now     string
	Flash   string
	Columns []string // counter names
	Total   []int64  // overall counters, in Columns order
	Tags    []tagRow // registered tags, sorted
	Logged  bool     // Options.DB is set
	Log     []logRow // newest first
	LogErr  string   // why the log could not be read
	Kinds   []string // the kinds the free form offers
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

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	st := h.p.Stats()
	d := pageData{
		Prefix:  h.p.Settings().Prefix,
		Now:     formatTime(h.opts.Now()),
		Flash:   flash(r.URL.Query().Get("done")),
		Columns: counterNames,
		Total:   counterValues(st.Total),
		Logged:  h.opts.DB != nil,
		Kinds:   []string{kindGroup, kindKey},
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
