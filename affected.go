package cacheme

import (
	"context"
	"errors"
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
	owed   pending       // groups and images of the rows as they were before the write
	pks    []any         // their primary keys, one value (or []any) per row
	upsert bool          // an upsert that may update existing rows
}

// readAffected reads the rows matching conds and returns their state: their
// groups and, if partners, the many-to-many keys of their join rows too. The
// read mirrors the clauses that choose the rows (WHERE, the write's FROM
// tables, the table's alias). It never fails the statement for its own
// read: see readRows. It returns nil after adding an error to the
// statement (a failed read of join rows).
func (p *Plugin) readAffected(db *gorm.DB, conds []clause.Expression, partners bool) *writeState {
	sch, ctx := db.Statement.Schema, db.Statement.Context
	table := writtenTable(db)
	rows := p.readRows(db, conds)
	st := &writeState{rows: rows.Elem()}
	if !rows.IsValid() {
		// Not even the whole table could be read: every cached read of it.
		st.rows = reflect.New(reflect.SliceOf(sch.ModelType)).Elem()
		st.owed.addGroups(TableGroup(table), ConjAllGroup(table))
		return st
	}
	st.owed.addImages(table, rowImages(ctx, sch, rows)...)
	if p.isJoinTable(ctx, sch) {
		st.owed.addGroups(p.joinGroups(ctx, sch, rows)...)
		return st
	}
	st.owed.addGroups(p.rowGroups(ctx, sch, table, rows)...)
	st.pks = primaryKeys(db, sch, rows)
	if partners {
		err := p.guarded(db, func() error { return p.partnerGroups(db, sch, st.pks, &st.owed) })
		if err != nil {
			p.reg.add(nil, fallbacks, 1)
			p.report(ctx, fmt.Errorf("%w: reading the join rows of the rows deleted from %s failed, so their partners' keys are not invalidated: %w",
				ErrBroadInvalidation, table, err))
		}
	}
	return st
}

// readRows reads the rows the statement is about to change (a pointer to
// a slice of the model).
//
// Invariant: the plugin never turns a write GORM would run into a failure,
// and never lets one through without its invalidation. If the read of the
// chosen rows fails (a clause it cannot mirror), it falls back to reading
// every row of the table: their groups and images, as they are before the
// write and (re-read by primary key) after it, are a superset of what any
// row of the table can affect, and TableGroup is always invalidated. The
// fallback is reported (ErrBroadInvalidation) and counted (Stats
// Fallbacks). If even that read fails, it returns the zero Value, and the
// caller invalidates TableGroup and ConjAllGroup, every cached read of the
// table; the report says so.
// On PostgreSQL, where a failed statement aborts its transaction, the read
// runs inside a savepoint that a failure rolls back to.
func (p *Plugin) readRows(db *gorm.DB, conds []clause.Expression) reflect.Value {
	sch, ctx := db.Statement.Schema, db.Statement.Context
	read := func(conds []clause.Expression, mirror bool) (reflect.Value, error) {
		rows := reflect.New(reflect.SliceOf(sch.ModelType))
		q := sameTable(subQuery(db), db)
		if mirror {
			if c, ok := db.Statement.Clauses["FROM"]; ok {
				if from, ok := c.Expression.(clause.From); ok && (len(from.Tables) > 0 || len(from.Joins) > 0) {
					// UPDATE t ... FROM a, b: read t's rows of t, a, b.
					tables := append([]clause.Table{{Name: clause.CurrentTable}}, from.Tables...)
					q = q.Clauses(clause.From{Tables: tables, Joins: from.Joins}).Select(q.Statement.Quote(db.Statement.Table) + ".*")
				}
			}
		}
		if len(conds) > 0 {
			q = q.Where(clause.And(conds...))
		}
		err := p.guarded(db, func() error { return q.Find(rows.Interface()).Error })
		return rows, err
	}
	rows, err := read(conds, true)
	if err == nil {
		return rows
	}
	p.reg.add(nil, fallbacks, 1)
	all, err2 := read(nil, false)
	if err2 == nil {
		p.report(ctx, fmt.Errorf("%w: reading the rows the statement changes on %s failed, so every row of the table is invalidated: %w", ErrBroadInvalidation, writtenTable(db), err))
		return all
	}
	p.report(ctx, fmt.Errorf("%w: reading the rows the statement changes on %s failed (%w), and so did reading the whole table, so only %s and %s are invalidated: %w",
		ErrBroadInvalidation, writtenTable(db), err, TableGroup(writtenTable(db)), ConjAllGroup(writtenTable(db)), err2))
	return reflect.Value{}
}

// guarded runs a read of the plugin's in the statement's transaction so
// that its failure cannot abort the transaction: on PostgreSQL inside a
// savepoint, rolled back to if the read fails.
func (p *Plugin) guarded(db *gorm.DB, read func() error) error {
	_, inTx := db.Statement.ConnPool.(gorm.TxCommitter)
	if !inTx || db.Dialector.Name() != "postgres" {
		return read()
	}
	const sp = "cacheme_read"
	q := subQuery(db)
	if err := q.Exec("SAVEPOINT " + sp).Error; err != nil {
		return err
	}
	if err := read(); err != nil {
		if rerr := q.Exec("ROLLBACK TO SAVEPOINT " + sp).Error; rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	return q.Exec("RELEASE SAVEPOINT " + sp).Error
}

// reread reads the rows with the given primary keys as the statement left
// them, in chunks, and adds their groups and images to w. If a read fails
// it does not fail the write: the rows' new cache keys are not
// invalidated (their old ones and TableGroup are), every cached read of
// the table filed under a conjunction is (ConjAllGroup), and it is
// reported.
func (p *Plugin) reread(db *gorm.DB, sch *schema.Schema, pks []any, w *pending) {
	ctx, table := db.Statement.Context, writtenTable(db)
	for _, chunk := range chunks(pkRows(pks), maxParams/max(1, len(sch.PrimaryFieldDBNames))) {
		rows := reflect.New(reflect.SliceOf(sch.ModelType))
		column, vals := schema.ToQueryValues(db.Statement.Table, sch.PrimaryFieldDBNames, chunk)
		if err := p.guarded(db, func() error {
			return sameTable(subQuery(db), db).Where(clause.IN{Column: column, Values: vals}).Find(rows.Interface()).Error
		}); err != nil {
			p.reg.add(nil, fallbacks, 1)
			p.report(ctx, fmt.Errorf("%w: re-reading the rows written to %s failed, so their new keys are not invalidated (their old ones, %s and %s are): %w",
				ErrBroadInvalidation, table, TableGroup(table), ConjAllGroup(table), err))
			w.addGroups(TableGroup(table), ConjAllGroup(table))
			return
		}
		w.addGroups(p.rowGroups(ctx, sch, table, rows)...)
		w.addImages(table, rowImages(ctx, sch, rows)...)
	}
}

// partnerGroups reads the join rows of every many-to-many relation in which
// rows of sch (primary keys pks) take part, and adds the groups of both
// sides and the join rows' images to w: deleting a row must invalidate its
// partners' many-to-many keys, and the cached reads of its join rows (the
// database may delete those with it).
func (p *Plugin) partnerGroups(db *gorm.DB, sch *schema.Schema, pks []any, w *pending) error {
	if len(pks) == 0 {
		return nil
	}
	ctx := db.Statement.Context
	for _, mb := range p.sideBindings(ctx, sch) {
		join := joinSchema(sch, mb.rel.JoinTable)
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
				return err
			}
			pairs := make([]relation.Pair, 0, len(rows))
			for _, r := range rows {
				pairs = append(pairs, relation.Pair{Owner: r[mb.rel.Owner.Column], Related: r[mb.rel.Related.Column]})
				w.addImages(mb.rel.JoinTable, mapImage(ctx, join, r))
			}
			w.addGroups(p.pairGroups(ctx, mb, pairs)...)
		}
	}
	return nil
}

// joinSchema returns the schema of a join table of one of sch's
// many-to-many relations, or nil.
func joinSchema(sch *schema.Schema, table string) *schema.Schema {
	for _, rel := range sch.Relationships.Many2Many {
		if rel.JoinTable != nil && rel.JoinTable.Table == table {
			return rel.JoinTable
		}
	}
	return nil
}

// mapImage returns the image of a row read as a map: through the fields of
// sch when it is known, so that values take their column's Go type as in
// rowImages, else as the driver gave them.
func mapImage(ctx context.Context, sch *schema.Schema, row map[string]any) image {
	if sch != nil {
		rv := reflect.New(sch.ModelType).Elem()
		ok := true
		for col, v := range row {
			if f := sch.LookUpField(col); f != nil && f.DBName != "" {
				if err := f.Set(ctx, rv, v); err != nil {
					ok = false
				}
			}
		}
		if ok {
			if imgs := rowImages(ctx, sch, rv); len(imgs) == 1 {
				return imgs[0]
			}
		}
	}
	img := image{}
	for col, v := range row {
		if s, ok := canonical(v); ok {
			img[col] = s
		}
	}
	return img
}
