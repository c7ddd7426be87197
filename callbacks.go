package cacheme

import (
	"fmt"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// callbacks is the registration table of the plugin's GORM callbacks. The
// "track" callbacks make GORM's implicit transaction one the plugin sees
// commit, on any connection (see trackConn); the "before" callbacks read
// the rows a statement is about to change (in its transaction); the
// "after" ones, placed after the write and its associations but before the
// models' After* hooks (whose errors must not lose a committed write's
// invalidation), collect what changed. The groups are invalidated after the
// transaction commits (see commit.go); a rollback drops them.
var callbacks = []struct {
	op     string // the processor: "create", "update", "delete", "query" or "row"
	before string // the GORM callback this one runs just before, or, after "replace ", replaces
	name   string // registered as "cacheme:<name>"
	fn     func(p *Plugin, db *gorm.DB)
}{
	// Reads: the query cache and dependency capture (querycache.go); each
	// runs GORM's own callback for a read neither cached nor captured.
	{"query", "replace gorm:query", "query", (*Plugin).queryCallback},
	{"row", "replace gorm:row", "row", (*Plugin).rowCallback},
	{"create", "gorm:begin_transaction", "track_create", (*Plugin).trackConn},
	{"create", "gorm:create", "before_create", (*Plugin).beforeCreate},
	{"create", "gorm:after_create", "after_create", (*Plugin).afterCreate},
	{"update", "gorm:begin_transaction", "track_update", (*Plugin).trackConn},
	{"update", "gorm:update", "before_update", (*Plugin).beforeUpdate},
	{"update", "gorm:after_update", "after_update", (*Plugin).afterUpdate},
	{"delete", "gorm:begin_transaction", "track_delete", (*Plugin).trackConn},
	{"delete", "gorm:delete", "before_delete", (*Plugin).beforeDelete},
	{"delete", "gorm:after_delete", "after_delete", (*Plugin).afterDelete},
}

// registerCallbacks registers the table with db. Every callback turns a
// panic of the user code it runs (CacheKey, key functions, node fields)
// into an error of the statement, so that GORM rolls its transaction back
// and no connection or row lock is left behind.
func (p *Plugin) registerCallbacks(db *gorm.DB) error {
	for _, c := range callbacks {
		proc := db.Callback().Create()
		switch c.op {
		case "update":
			proc = db.Callback().Update()
		case "delete":
			proc = db.Callback().Delete()
		case "query":
			proc = db.Callback().Query()
		case "row":
			proc = db.Callback().Row()
		}
		fn, name := c.fn, c.name
		hook := func(db *gorm.DB) {
			defer func() {
				if v := recover(); v != nil {
					db.AddError(fmt.Errorf("%w: %s: %v", ErrPanic, name, v))
				}
			}()
			fn(p, db)
		}
		var err error
		if replaced, ok := strings.CutPrefix(c.before, "replace "); ok {
			err = proc.Replace(replaced, hook)
		} else {
			err = proc.Before(c.before).Register(Name+":"+name, hook)
		}
		if err != nil {
			return fmt.Errorf("cacheme: register callback %s: %w", c.name, err)
		}
	}
	return nil
}

// stateKey holds, per statement, what the before callbacks found.
const stateKey = Name + ":state"

// beforeCreate reads the rows an upsert may overwrite.
func (p *Plugin) beforeCreate(db *gorm.DB) {
	if !p.open(db) || !p.active(db) {
		return
	}
	cond, upsert, _ := upsertConds(db)
	if !upsert {
		return
	}
	st := &writeState{upsert: true}
	if cond != nil {
		if st = p.readAffected(db, []clause.Expression{cond}, false); st == nil {
			return
		}
		st.upsert = true
	}
	db.InstanceSet(stateKey, st)
}

func (p *Plugin) beforeUpdate(db *gorm.DB) { p.beforeWrite(db, false) }

// beforeDelete also reads the join rows of the deleted rows: their partners'
// many-to-many keys change too.
func (p *Plugin) beforeDelete(db *gorm.DB) { p.beforeWrite(db, true) }

// beforeWrite reads the rows an update or delete is about to change, in the
// statement's transaction, so that their keys are known even when GORM
// gets no instances (Where(...).Delete(&User{}), Delete(&User{}, 10)).
func (p *Plugin) beforeWrite(db *gorm.DB, partners bool) {
	if !p.open(db) || !p.active(db) {
		return
	}
	conds := writeConds(db)
	if len(conds) == 0 && !db.AllowGlobalUpdate {
		return // GORM refuses the statement (ErrMissingWhereClause)
	}
	if st := p.readAffected(db, conds, partners); st != nil {
		db.InstanceSet(stateKey, st)
	}
}

// afterCreate collects the groups and images of the created rows, or of
// the join rows of a many-to-many relation; after an upsert, also of the
// rows as the database now holds them (DoUpdates may have set other
// values).
func (p *Plugin) afterCreate(db *gorm.DB) {
	if p.unchanged(db) || p.tableOnly(db) || !p.active(db) {
		return
	}
	sch, ctx, table := db.Statement.Schema, db.Statement.Context, writtenTable(db)
	st := p.state(db)
	w := &pending{}
	w.addGroups(TableGroup(table))
	w.merge(&st.owed)
	rows := createdRows(db)
	w.addImages(table, rowImages(ctx, sch, rows)...)
	if p.isJoinTable(ctx, sch) {
		w.addGroups(p.joinGroups(ctx, sch, rows)...)
		p.enqueue(db, w)
		return
	}
	w.addGroups(p.rowGroups(ctx, sch, table, rows)...)
	if st.upsert && db.Error == nil {
		p.reread(db, sch, append(primaryKeys(db, sch, rows), st.pks...), w)
	}
	p.enqueue(db, w)
}

// afterUpdate collects the groups and images of the updated rows before
// and after the update, so that a key or a cached read that depends on a
// changed column is invalidated under its old and its new value.
func (p *Plugin) afterUpdate(db *gorm.DB) {
	if p.unchanged(db) || p.tableOnly(db) || !p.active(db) {
		return
	}
	st := p.state(db)
	sch, ctx, table := db.Statement.Schema, db.Statement.Context, writtenTable(db)
	join := p.isJoinTable(ctx, sch)
	w := &pending{}
	w.addGroups(TableGroup(table))
	w.merge(&st.owed)
	// The rows as the statement's plain new values make them: this catches
	// new values the re-read below cannot find (a changed primary key, a
	// join row moved to another partner).
	if moved, ok := overlay(db, sch, st.rows); ok {
		w.addImages(table, rowImages(ctx, sch, moved)...)
		if join {
			w.addGroups(p.joinGroups(ctx, sch, moved)...)
		} else {
			w.addGroups(p.rowGroups(ctx, sch, table, moved)...)
		}
	}
	if db.Error == nil && !join {
		p.reread(db, sch, st.pks, w)
	}
	p.enqueue(db, w)
}

// afterDelete collects the groups and images found before the delete.
func (p *Plugin) afterDelete(db *gorm.DB) {
	if p.unchanged(db) || p.tableOnly(db) || !p.active(db) {
		return
	}
	w := &pending{}
	w.addGroups(TableGroup(writtenTable(db)))
	w.merge(&p.state(db).owed)
	p.enqueue(db, w)
}

// unchanged reports whether the statement ran and wrote no row: an
// insert that met a conflict and did nothing (GORM re-saving the rows of an
// association), an update or delete that matched no row or had nothing to
// set. Such a statement invalidates nothing. (PostgreSQL and SQLite count
// the rows an UPDATE matched, changed or not.)
func (p *Plugin) unchanged(db *gorm.DB) bool {
	return db.Error == nil && db.RowsAffected == 0 && !db.DryRun
}

// open refuses the statement, before it runs, once the plugin is closed:
// its invalidation could not be delivered.
func (p *Plugin) open(db *gorm.DB) bool {
	if p.closed.Load() {
		db.AddError(fmt.Errorf("%w: table %s", ErrClosed, db.Statement.Table))
		return false
	}
	return true
}

// active reports whether the plugin handles the statement.
func (p *Plugin) active(db *gorm.DB) bool {
	return db.Statement.Schema != nil && db.Statement.Table != ""
}

// tableOnly handles a write made without a model, such as
// db.Table("users").Where(...).Update(...): its rows and their keys are
// unknown, so only the table's group and every cached read filed under a
// conjunction of the table (ConjAllGroup) are invalidated. It reports
// whether the statement had no model.
func (p *Plugin) tableOnly(db *gorm.DB) bool {
	if db.Statement.Schema != nil {
		return false
	}
	if table := writtenTable(db); table != "" {
		w := &pending{}
		w.addGroups(TableGroup(table), ConjAllGroup(table))
		p.enqueue(db, w)
	}
	return true
}

// state returns what the before callbacks found for the statement.
func (p *Plugin) state(db *gorm.DB) *writeState {
	if v, ok := db.InstanceGet(stateKey); ok {
		if st, ok := v.(*writeState); ok {
			return st
		}
	}
	return &writeState{}
}
