package cacheme

import (
	"fmt"
	"reflect"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme/internal/relation"
)

// The rows a write affects, read from the database in the statement's own
// transaction: before an update or a delete (the rows the conditions
// choose, their join rows), and after an update or an upsert (the rows as
// the statement left them).

// writeState is what the before callbacks found, kept on the statement for
// the after callbacks.
type writeState struct {
	rows   reflect.Value // the rows read before the write (a slice), if read
	groups []string      // groups of the rows as they were before the write
	pks    []any         // their primary keys, one value (or []any) per row
	upsert bool          // an upsert that may update existing rows
}

// readAffected reads the rows matching conds and returns their state: their
// groups and, if partners, the many-to-many keys of their join rows too. It
// returns nil after adding an error to the statement.
func (p *Plugin) readAffected(db *gorm.DB, conds []clause.Expression, partners bool) *writeState {
	sch, ctx := db.Statement.Schema, db.Statement.Context
	rows := reflect.New(reflect.SliceOf(sch.ModelType))
	q := sameTable(subQuery(db), db)
	if len(conds) > 0 {
		q = q.Where(clause.And(conds...))
	}
	if err := q.Find(rows.Interface()).Error; err != nil {
		db.AddError(fmt.Errorf("cacheme: reading the rows the statement changes: %w", err))
		return nil
	}
	st := &writeState{rows: rows.Elem()}
	if p.isJoinTable(ctx, sch) {
		st.groups = p.joinGroups(ctx, sch, rows)
		return st
	}
	st.groups = p.rowGroups(ctx, sch, writtenTable(db), rows)
	st.pks = primaryKeys(db, sch, rows)
	if partners {
		g, err := p.partnerGroups(db, sch, st.pks)
		if err != nil {
			db.AddError(fmt.Errorf("cacheme: reading many-to-many rows: %w", err))
			return nil
		}
		st.groups = append(st.groups, g...)
	}
	return st
}

// rereadGroups reads the rows with the given primary keys as the statement
// left them, in chunks, and returns their groups. It reports false after
// adding an error to the statement.
func (p *Plugin) rereadGroups(db *gorm.DB, sch *schema.Schema, pks []any) ([]string, bool) {
	var groups []string
	for _, chunk := range chunks(pkRows(pks), maxParams/max(1, len(sch.PrimaryFieldDBNames))) {
		rows := reflect.New(reflect.SliceOf(sch.ModelType))
		column, vals := schema.ToQueryValues(db.Statement.Table, sch.PrimaryFieldDBNames, chunk)
		if err := sameTable(subQuery(db), db).Where(clause.IN{Column: column, Values: vals}).Find(rows.Interface()).Error; err != nil {
			db.AddError(fmt.Errorf("cacheme: reading the written rows: %w", err))
			return nil, false
		}
		groups = append(groups, p.rowGroups(db.Statement.Context, sch, writtenTable(db), rows)...)
	}
	return groups, true
}

// partnerGroups reads the join rows of every many-to-many relation in which
// rows of sch (primary keys pks) take part, and returns the groups of both
// sides: deleting a row must invalidate its partners' many-to-many keys.
func (p *Plugin) partnerGroups(db *gorm.DB, sch *schema.Schema, pks []any) ([]string, error) {
	if len(pks) == 0 {
		return nil, nil
	}
	ctx := db.Statement.Context
	var groups []string
	for _, mb := range p.sideBindings(ctx, sch) {
		for _, chunk := range chunks(pks, maxParams/2) {
			var conds []clause.Expression
			for _, side := range mb.rel.Sides() {
				if side.Schema != nil && side.Schema.Table == sch.Table {
					conds = append(conds, clause.IN{Column: clause.Column{Name: side.Column}, Values: chunk})
				}
			}
			if len(conds) == 0 {
				continue
			}
			var rows []map[string]any
			q := subQuery(db).Table(mb.rel.JoinTable)
			if len(conds) == 1 {
				q = q.Where(conds[0])
			} else {
				q = q.Where(clause.Or(conds...))
			}
			if err := q.Find(&rows).Error; err != nil {
				return nil, err
			}
			pairs := make([]relation.Pair, 0, len(rows))
			for _, r := range rows {
				pairs = append(pairs, relation.Pair{Owner: r[mb.rel.Owner.Column], Related: r[mb.rel.Related.Column]})
			}
			groups = append(groups, p.pairGroups(ctx, mb, pairs)...)
		}
	}
	return groups, nil
}
