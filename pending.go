package cacheme

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
)

// pending is what writes owe once they commit: the groups they invalidate
// (cache keys, nodes, TableGroup, ...) and the images of the rows they
// wrote, by table, from which the conjunction groups of cached reads are
// found after the commit (see conj.go and schemes.go). A transaction
// collects one for all its statements; the outbox records it.
type pending struct {
	groups map[string]bool
	images map[string]map[string]image // table -> image key -> image
}

// addGroups adds group names; empty ones are skipped.
func (w *pending) addGroups(groups ...string) {
	for _, g := range groups {
		if g == "" {
			continue
		}
		if w.groups == nil {
			w.groups = map[string]bool{}
		}
		w.groups[g] = true
	}
}

// addImages adds the images of rows of table.
func (w *pending) addImages(table string, imgs ...image) {
	if len(imgs) == 0 {
		return
	}
	if w.images == nil {
		w.images = map[string]map[string]image{}
	}
	m := w.images[table]
	if m == nil {
		m = map[string]image{}
		w.images[table] = m
	}
	for _, img := range imgs {
		m[img.key()] = img
	}
}

// merge adds everything o holds.
func (w *pending) merge(o *pending) {
	if o == nil {
		return
	}
	for g := range o.groups {
		w.addGroups(g)
	}
	for t, m := range o.images {
		for _, img := range m {
			w.addImages(t, img)
		}
	}
}

// empty reports whether there is nothing to invalidate.
func (w *pending) empty() bool { return w == nil || len(w.groups) == 0 && len(w.images) == 0 }

// groupList returns the sorted group names.
func (w *pending) groupList() []string {
	out := make([]string, 0, len(w.groups))
	for g := range w.groups {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// tables returns the sorted tables with images.
func (w *pending) tables() []string {
	out := make([]string, 0, len(w.images))
	for t := range w.images {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// pendingJSON is the outbox's record of a pending invalidation. Rows
// written before images were recorded hold a plain JSON array of groups.
type pendingJSON struct {
	Groups []string           `json:"g"`
	Images map[string][]image `json:"i,omitempty"`
}

// MarshalJSON encodes w for the outbox.
func (w *pending) MarshalJSON() ([]byte, error) {
	j := pendingJSON{Groups: w.groupList()}
	if len(w.images) > 0 {
		j.Images = map[string][]image{}
		for _, t := range w.tables() {
			keys := make([]string, 0, len(w.images[t]))
			for k := range w.images[t] {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				j.Images[t] = append(j.Images[t], w.images[t][k])
			}
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes an outbox record, in either form.
func (w *pending) UnmarshalJSON(b []byte) error {
	var groups []string
	if err := json.Unmarshal(b, &groups); err == nil {
		*w = pending{}
		w.addGroups(groups...)
		return nil
	}
	var j pendingJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*w = pending{}
	w.addGroups(j.Groups...)
	for t, imgs := range j.Images {
		w.addImages(t, imgs...)
	}
	return nil
}

// resolve returns every group w invalidates: its groups, and the
// conjunction groups its images satisfy under the schemes Redis holds now
// (read after the commit: see schemes.go). If the schemes of a table cannot
// be read, every cached read filed under a conjunction of it is
// invalidated instead (ConjAllGroup), and reported.
func (p *Plugin) resolve(ctx context.Context, w *pending) []string {
	groups := w.groupList()
	tables := w.tables()
	if len(tables) == 0 {
		return groups
	}
	schemes, err := p.readSchemes(ctx, tables)
	for _, t := range tables {
		sc, ok := schemes[t]
		if !ok {
			groups = append(groups, ConjAllGroup(t))
			continue
		}
		imgs := make([]image, 0, len(w.images[t]))
		for _, img := range w.images[t] {
			imgs = append(imgs, img)
		}
		groups = append(groups, conjGroups(t, sc, imgs)...)
	}
	if err != nil {
		p.reg.add(nil, fallbacks, 1)
		p.reg.add(nil, redisErrors, 1)
		p.report(ctx, fmt.Errorf("%w: reading the query schemes of %v failed, so every cached read filed under their conjunctions is invalidated: %w",
			ErrBroadInvalidation, tables, err))
	}
	slices.Sort(groups)
	return slices.Compact(groups)
}
