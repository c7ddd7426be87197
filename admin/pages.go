package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/history"
)

// view is what every page shows: the header, the navigation, and what the
// actor may do.
type view struct {
	Title     string
	Prefix    string
	Now       string
	ReadOnly  bool     // Options.ReadOnly
	Logged    bool     // Options.DB is set
	CanBrowse bool     // the actor may browse entries
	CSRF      string   // the actor's CSRF token
	CanTag    bool     // the actor may invalidate tags
	CanNode   bool     // node types
	CanKey    bool     // keys
	CanPat    bool     // patterns
	Kinds     []string // the kinds the free form offers (group, key: those the actor may invalidate)
}

// titles are the pages' titles, by path.
var titles = map[string]string{"/history": "History", "/browse": "Browse", "/entry": "Entry", "pattern": "Pattern"}

func (h *handler) view(r *http.Request, actor, page string) view {
	v := view{
		Title:     titles[page],
		Prefix:    h.p.Settings().Prefix,
		Now:       formatTime(h.opts.Now()),
		ReadOnly:  h.opts.ReadOnly,
		Logged:    h.opts.DB != nil,
		CanBrowse: h.auth.allows(r, ActionBrowse),
		CSRF:      csrfToken(h.key, actor),
	}
	if !h.opts.ReadOnly {
		v.CanTag = h.auth.allows(r, ActionInvalidateTag)
		v.CanNode = h.auth.allows(r, ActionInvalidateNode)
		v.CanKey = h.auth.allows(r, ActionInvalidateKey)
		v.CanPat = h.auth.allows(r, ActionInvalidatePattern)
		for _, k := range []string{kindGroup, kindKey} {
			if h.auth.allows(r, actionOf[k]) {
				v.Kinds = append(v.Kinds, k)
			}
		}
	}
	return v
}

// render executes the named template and writes it with status 200.
func render(w http.ResponseWriter, name string, data any) {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		http.Error(w, "admin: render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	_, _ = w.Write(b.Bytes())
}

type tagRow struct {
	Name   string
	Kind   string // the form kind of its button ("tag" or "node"), "" for none
	Counts []int64
}

type logRow struct {
	Time    string
	Actor   string
	Kind    string
	Target  string
	Entries int
}

// overviewData is what templates/overview.html renders.
type overviewData struct {
	view
	Flash   string
	Columns []string // counter names
	Total   []int64  // this process's counters, in Columns order
	Tags    []tagRow // this process's registered tags, sorted
	Fleet   fleetView
	Log     []logRow // newest first
	More    bool     // the log holds more than Log
	LogErr  string   // why the log could not be read
}

// fleetView is the counters of all processes.
type fleetView struct {
	Err       string
	Processes int
	Total     []int64
	Ratio     string
	Groups    []fleetGroup
	Chart     chart
}

// fleetGroup is the tags of one kind.
type fleetGroup struct {
	Title  string
	Button bool // some row has a button
	Rows   []tagRow
}

func (h *handler) overview(w http.ResponseWriter, r *http.Request, q url.Values, v view) {
	st := h.p.Stats()
	d := overviewData{
		view:    v,
		Flash:   flash(q.Get("done")),
		Columns: counterNames,
		Total:   counterValues(st.Total),
		Fleet:   h.fleet(r.Context(), v),
	}
	for _, t := range h.p.Tags() {
		row := tagRow{Name: t, Counts: counterValues(st.Tags[t])}
		if v.CanTag {
			row.Kind = kindTag
		}
		d.Tags = append(d.Tags, row)
	}
	if d.Logged {
		rows, next, err := h.log().Page(r.Context(), 0, LogRows)
		if err != nil {
			d.LogErr = err.Error()
		}
		d.Log, d.More = logRows(rows), next != 0
	}
	render(w, "overview.html", d)
}

// fleet reads the counters of all processes.
func (h *handler) fleet(ctx context.Context, v view) fleetView {
	f, err := h.p.FleetStats(ctx)
	if err != nil {
		return fleetView{Err: err.Error()}
	}
	fv := fleetView{Processes: f.Processes, Total: counterValues(f.Total), Ratio: ratio(f.Total), Chart: newChart(f.Minutes)}
	groups := []struct {
		kind  cacheme.TagKind
		title string
	}{{cacheme.KindFunction, "Functions"}, {cacheme.KindNode, "Nodes"}, {cacheme.KindTable, "Tables"}}
	names := make([]string, 0, len(f.Tags))
	for t := range f.Tags {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, g := range groups {
		fg := fleetGroup{Title: g.title}
		for _, t := range names {
			if f.Kinds[t] != g.kind {
				continue
			}
			row := tagRow{Name: t, Counts: counterValues(f.Tags[t])}
			switch {
			case t == cacheme.FleetOther:
			case g.kind == cacheme.KindNode && v.CanNode:
				row.Kind = kindNode
			case g.kind != cacheme.KindNode && v.CanTag:
				row.Kind = kindTag
			}
			fg.Button = fg.Button || row.Kind != ""
			fg.Rows = append(fg.Rows, row)
		}
		if len(fg.Rows) > 0 {
			fv.Groups = append(fv.Groups, fg)
		}
	}
	return fv
}

// ratio is the share of calls served from the cache (hits and stale
// serves, of those and misses), or "–" without calls.
func ratio(c cacheme.Counters) string {
	served := c.Hits + c.LocalHits + c.Stale
	if served+c.Misses == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(served)/float64(served+c.Misses))
}

// chart is the hit ratio per minute, drawn as SVG bars.
type chart struct {
	Width, Height, PlotX, PlotW int
	Bars                        []bar
	From, To                    string
}

type bar struct {
	X, Y, W, H int
	Fill       string
	Title      string
}

const (
	chartBarW  = 10
	chartPlotH = 100
	chartTop   = 8
)

func newChart(minutes []cacheme.FleetMinute) chart {
	c := chart{PlotX: 40, PlotW: chartBarW * len(minutes), Height: chartTop + chartPlotH + 20}
	c.Width = c.PlotX + c.PlotW + 10
	if len(minutes) > 0 {
		c.From, c.To = minutes[0].Start.UTC().Format("15:04"), minutes[len(minutes)-1].Start.UTC().Format("15:04")
	}
	for i, m := range minutes {
		served := m.Hits + m.LocalHits + m.Stale
		calls := served + m.Misses
		if calls == 0 {
			continue
		}
		h := int(float64(chartPlotH)*float64(served)/float64(calls) + 0.5)
		fill := "#3a7"
		if float64(served) < 0.5*float64(calls) {
			fill = "#c63"
		}
		c.Bars = append(c.Bars, bar{
			X: c.PlotX + i*chartBarW + 1, Y: chartTop + chartPlotH - max(h, 1), W: chartBarW - 2, H: max(h, 1), Fill: fill,
			Title: fmt.Sprintf("%s UTC: %s of %d calls", m.Start.UTC().Format("15:04"), ratio(m.Counters), calls),
		})
	}
	return c
}

func (h *handler) log() history.Log {
	return history.Log{DB: h.opts.DB, Dialect: h.opts.Dialect, Now: h.opts.Now}
}

func logRows(rows []history.Row) []logRow {
	out := make([]logRow, len(rows))
	for i, r := range rows {
		out[i] = logRow{Time: formatTime(r.Time), Actor: r.Actor, Kind: r.Kind, Target: r.Target, Entries: r.Entries}
	}
	return out
}

// browseData is what templates/browse.html renders.
type browseData struct {
	view
	Match, Tag, Group string
	Entries           []cacheme.EntryInfo
	Next              template.URL // the query of the next page, "" at the end
}

func (h *handler) browse(w http.ResponseWriter, r *http.Request, q url.Values, v view) {
	d := browseData{view: v, Match: q.Get("match"), Tag: q.Get("tag"), Group: q.Get("group")}
	page, err := h.p.ScanEntries(r.Context(), cacheme.ScanOptions{
		Cursor: q.Get("cursor"), Limit: BrowseRows, Match: d.Match, Tag: d.Tag, Group: d.Group,
	})
	if err != nil {
		http.Error(w, "browse: "+err.Error(), errorCode(err))
		return
	}
	d.Entries = page.Entries
	sort.Slice(d.Entries, func(i, j int) bool { return d.Entries[i].Key < d.Entries[j].Key })
	if page.Next != "" {
		next := url.Values{"cursor": {page.Next}}
		for _, f := range []string{"match", "tag", "group"} {
			if s := q.Get(f); s != "" {
				next.Set(f, s)
			}
		}
		d.Next = template.URL(next.Encode()) // encoded here: safe in the href's query
	}
	render(w, "browse.html", d)
}

// entryData is what templates/entry.html renders.
type entryData struct {
	view
	Info cacheme.EntryInfo
}

func (h *handler) entry(w http.ResponseWriter, r *http.Request, q url.Values, v view) {
	key := q.Get("key")
	if key == "" {
		http.Error(w, "entry: name the key (?key=)", http.StatusBadRequest)
		return
	}
	info, err := h.p.Inspect(r.Context(), key)
	if err != nil {
		http.Error(w, "entry: "+err.Error(), errorCode(err))
		return
	}
	render(w, "entry.html", entryData{view: v, Info: info})
}

// historyData is what templates/history.html renders.
type historyData struct {
	view
	Rows   []logRow
	Next   int64 // the before of the next page, 0 at the end
	LogErr string
}

func (h *handler) history(w http.ResponseWriter, r *http.Request, q url.Values, v view) {
	if !v.Logged {
		http.Error(w, "history: no log (Options.DB is not set)", http.StatusNotFound)
		return
	}
	var before int64
	if s := q.Get("before"); s != "" {
		var err error
		if before, err = strconv.ParseInt(s, 10, 64); err != nil || before <= 0 {
			http.Error(w, fmt.Sprintf("history: bad before %q: want a row id", s), http.StatusBadRequest)
			return
		}
	}
	d := historyData{view: v}
	rows, next, err := h.log().Page(r.Context(), before, HistoryRows)
	if err != nil {
		d.LogErr = err.Error()
	}
	d.Rows, d.Next = logRows(rows), next
	render(w, "history.html", d)
}

// confirmData is what templates/confirm.html renders.
type confirmData struct {
	view
	Pattern string
	Count   int
	All     bool // the pattern covers the whole namespace
}

// dryRun counts what a pattern would invalidate and shows the form that
// confirms it.
func (h *handler) dryRun(w http.ResponseWriter, r *http.Request, actor, pattern string) {
	n, err := h.p.InvalidatePattern(r.Context(), pattern, true, nil)
	if err != nil {
		code := errorCode(err)
		if errors.Is(err, cacheme.ErrInvalidKey) {
			code = http.StatusBadRequest
		}
		http.Error(w, fmt.Sprintf("dry run of pattern %q: %v", pattern, err), code)
		return
	}
	v := h.view(r, actor, "pattern")
	render(w, "confirm.html", confirmData{view: v, Pattern: pattern, Count: n, All: cacheme.PatternCoversAll(pattern)})
}
