package cacheme

import (
	"fmt"
	"reflect"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme/m2m"
)

// callbacks is the registration table of the plugin's GORM callbacks. The
// "track" callbacks make GORM's implicit transaction one the plugin sees
// commit, on any connection (see trackConn); the "before" callbacks read the rows a statement is about to change (in its
// transaction); the "after" ones, placed after the write and its
// associations but before the models' After* hooks (whose errors must not
// lose a committed write's invalidation), collect what changed. The groups
// are invalidated after the transaction commits (see commit.go); a rollback
// drops them.
var callbacks = []struct {
	op     string // the statement: "create", "update" or "delete"
	before string // the GORM callback this one runs just before
	name   string // registered as "cacheme:<name>"
	fn     func(p *Plugin, db *gorm.DB)
}{
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

// registerCallbacks registers the table with db.
func (p *Plugin) registerCallbacks(db *gorm.DB) error {
	for _, c := range callbacks {
		proc := db.Callback().Create()
		switch c.op {
		case "update":
			proc = db.Callback().Update()
		case "delete":
			proc = db.Callback().Delete()
		}
		fn := c.fn
		if err := proc.Before(c.before).Register(Name+":"+c.name, func(db *gorm.DB) { fn(p, db) }); err != nil {
			return fmt.Errorf("cacheme: register callback %s: %w", c.name, err)
		}
	}
	return nil
}

// stateKey holds, per statement, what the before callbacks found.
const stateKey = Name + ":state"

type writeState struct {
	rows   reflect.Value // the rows read before the write (a slice), if read
	groups []string      // groups of the rows as they were before the write
	pks    []any         // their primary keys, one value (or []any) per row
	upsert bool          // an upsert that may update existing rows
}

// beforeCreate reads the rows an upsert may overwrite.
func (p *Plugin) beforeCreate(db *gorm.DB) {
	if !p.active(db) {
		return
	}
	c, ok := db.Statement.Clauses["ON CONFLICT"]
	if !ok {
		return
	}
	oc, ok := c.Expression.(clause.OnConflict)
	if !ok || oc.DoNothing {
		return
	}
	sch := db.Statement.Schema
	cols := make([]string, 0, len(oc.Columns))
	for _, col := range oc.Columns {
		cols = append(cols, col.Name)
	}
	if len(cols) == 0 {
		cols = sch.PrimaryFieldDBNames
	}
	var ors []clause.Expression
	m2m.EachRow(db.Statement.ReflectValue, func(row reflect.Value) {
		var and []clause.Expression
		for _, col := range cols {
			f := sch.LookUpField(col)
			if f == nil {
				return
			}
			v, zero := f.ValueOf(db.Statement.Context, row)
			if zero {
				return
			}
			and = append(and, clause.Eq{Column: clause.Column{Name: f.DBName}, Value: v})
		}
		ors = append(ors, clause.And(and...))
	})
	st := &writeState{upsert: true}
	if len(ors) > 0 {
		st = p.readAffected(db, []clause.Expression{clause.Or(ors...)}, false)
		if st == nil {
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
	if !p.active(db) {
		return
	}
	var conds []clause.Expression
	if c, ok := db.Statement.Clauses["WHERE"]; ok {
		if w, ok := c.Expression.(clause.Where); ok {
			conds = append(conds, w.Exprs...)
		}
	}
	// GORM adds the primary keys of the destination, and of a distinct
	// Model (db.Model(&u).Delete(&User{})), to the statement's conditions.
	sch := db.Statement.Schema
	pkCond := func(v reflect.Value) {
		if !v.IsValid() || len(sch.PrimaryFields) == 0 {
			return
		}
		if k := reflect.Indirect(v).Kind(); k != reflect.Struct && k != reflect.Slice && k != reflect.Array {
			return
		}
		if t := reflect.Indirect(v).Type(); t != sch.ModelType && (t.Kind() != reflect.Slice && t.Kind() != reflect.Array) {
			return
		}
		_, values := schema.GetIdentityFieldValuesMap(db.Statement.Context, v, sch.PrimaryFields)
		if column, vals := schema.ToQueryValues(db.Statement.Table, sch.PrimaryFieldDBNames, values); len(vals) > 0 {
			conds = append(conds, clause.IN{Column: column, Values: vals})
		}
	}
	pkCond(db.Statement.ReflectValue)
	if mv, dv := reflect.ValueOf(db.Statement.Model), reflect.ValueOf(db.Statement.Dest); mv.Kind() == reflect.Pointer &&
		(dv.Kind() != reflect.Pointer || dv.Pointer() != mv.Pointer()) {
		pkCond(mv)
	}
	if len(conds) == 0 && !db.AllowGlobalUpdate {
		return // GORM refuses the statement (ErrMissingWhereClause)
	}
	if st := p.readAffected(db, conds, partners); st != nil {
		db.InstanceSet(stateKey, st)
	}
}

// readAffected reads the rows matching conds and returns their state: their
// groups and, if partners, the many-to-many keys of their join rows too. It
// returns nil after adding an error to the statement.
func (p *Plugin) readAffected(db *gorm.DB, conds []clause.Expression, partners bool) *writeState {
	sch := db.Statement.Schema
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
	if p.isJoinTable(sch.Table) {
		st.groups = p.joinGroups(sch, rows)
		return st
	}
	st.groups = p.rowGroups(db.Statement.Context, sch, writtenTable(db), rows)
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

// afterCreate collects the groups of the created rows, or of the join rows
// of a registered many-to-many relation; after an upsert, also of the rows
// as the database now holds them (DoUpdates may have set other values).
func (p *Plugin) afterCreate(db *gorm.DB) {
	if p.tableOnly(db) || !p.active(db) {
		return
	}
	sch := db.Statement.Schema
	st := p.state(db)
	groups := append([]string{TableGroup(writtenTable(db))}, st.groups...)
	rows := createdRows(db)
	if p.isJoinTable(sch.Table) {
		p.enqueue(db, append(groups, p.joinGroups(sch, rows)...))
		return
	}
	groups = append(groups, p.rowGroups(db.Statement.Context, sch, writtenTable(db), rows)...)
	if st.upsert && db.Error == nil {
		pks := append(primaryKeys(db, sch, rows), st.pks...)
		g, ok := p.rereadGroups(db, sch, pks)
		if !ok {
			return
		}
		groups = append(groups, g...)
	}
	p.enqueue(db, groups)
}

// afterUpdate collects the groups of the updated rows before and after the
// update, so that a key that depends on a changed column is invalidated
// under its old and its new value.
func (p *Plugin) afterUpdate(db *gorm.DB) {
	if p.tableOnly(db) || !p.active(db) {
		return
	}
	st := p.state(db)
	sch := db.Statement.Schema
	groups := append([]string{TableGroup(writtenTable(db))}, st.groups...)
	// The rows as the statement's plain new values make them: this catches
	// new values the re-read below cannot find (a changed primary key, a
	// join row moved to another partner).
	if moved, ok := overlay(db, sch, st.rows); ok {
		if p.isJoinTable(sch.Table) {
			groups = append(groups, p.joinGroups(sch, moved)...)
		} else {
			groups = append(groups, p.rowGroups(db.Statement.Context, sch, writtenTable(db), moved)...)
		}
	}
	if db.Error == nil && !p.isJoinTable(sch.Table) {
		g, ok := p.rereadGroups(db, sch, st.pks)
		if !ok {
			return
		}
		groups = append(groups, g...)
	}
	p.enqueue(db, groups)
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

// maxParams bounds the values of one IN list the plugin sends (SQLite
// allows 32766 parameters, PostgreSQL 65535).
const maxParams = 1000

// chunks splits rows into slices of at most n.
func chunks[T any](rows []T, n int) [][]T {
	var out [][]T
	for len(rows) > 0 {
		k := min(n, len(rows))
		out = append(out, rows[:k])
		rows = rows[k:]
	}
	return out
}

// afterDelete collects the groups found before the delete.
func (p *Plugin) afterDelete(db *gorm.DB) {
	if p.tableOnly(db) || !p.active(db) {
		return
	}
	p.enqueue(db, append([]string{TableGroup(writtenTable(db))}, p.state(db).groups...))
}

// active reports whether the plugin handles the statement.
func (p *Plugin) active(db *gorm.DB) bool {
	return db.Statement.Schema != nil && db.Statement.Table != ""
}

// tableOnly handles a write made without a model, such as
// db.Table("users").Where(...).Update(...): its rows and their keys are
// unknown, so only the table's group is invalidated. It reports whether the
// statement had no model.
func (p *Plugin) tableOnly(db *gorm.DB) bool {
	if db.Statement.Schema != nil {
		return false
	}
	if db.Statement.Table != "" {
		p.enqueue(db, []string{TableGroup(writtenTable(db))})
	}
	return true
}

// writtenTable returns the name of the table the statement writes, without
// an alias: db.Table("archive") writes archive, db.Table("users AS u")
// users.
func writtenTable(db *gorm.DB) string {
	if e := db.Statement.TableExpr; e != nil {
		if f := strings.Fields(e.SQL); len(f) > 0 {
			return strings.Trim(f[0], "`\"")
		}
	}
	if db.Statement.Table != "" {
		return db.Statement.Table
	}
	return db.Statement.Schema.Table
}

// createdRows returns the rows a create wrote: the destination's structs,
// or, for a map or a slice of maps (Model(&User{}).Create(map)), rows of the
// model built from them (GORM writes the new primary key into the map).
func createdRows(db *gorm.DB) reflect.Value {
	var maps []map[string]any
	switch d := db.Statement.Dest.(type) {
	case map[string]any:
		maps = []map[string]any{d}
	case *map[string]any:
		maps = []map[string]any{*d}
	case []map[string]any:
		maps = d
	case *[]map[string]any:
		maps = *d
	default:
		return db.Statement.ReflectValue
	}
	sch := db.Statement.Schema
	rows := reflect.MakeSlice(reflect.SliceOf(sch.ModelType), len(maps), len(maps))
	for i, m := range maps {
		for k, v := range m {
			if f := sch.LookUpField(k); f != nil {
				_ = f.Set(db.Statement.Context, rows.Index(i), v)
			}
		}
	}
	return rows
}

func (p *Plugin) state(db *gorm.DB) *writeState {
	if v, ok := db.InstanceGet(stateKey); ok {
		if st, ok := v.(*writeState); ok {
			return st
		}
	}
	return &writeState{}
}

func (p *Plugin) isJoinTable(table string) bool {
	return len(p.joinBindings(table)) > 0
}

// primaryKeys returns the primary key values of rows, one []any per row.
func primaryKeys(db *gorm.DB, sch *schema.Schema, rows reflect.Value) []any {
	if len(sch.PrimaryFields) == 0 {
		return nil
	}
	_, values := schema.GetIdentityFieldValuesMap(db.Statement.Context, rows, sch.PrimaryFields)
	out := make([]any, 0, len(values))
	for _, v := range values {
		if len(v) == 1 {
			out = append(out, v[0])
		} else {
			out = append(out, v)
		}
	}
	return out
}

func pkRows(pks []any) [][]any {
	out := make([][]any, 0, len(pks))
	for _, pk := range pks {
		if v, ok := pk.([]any); ok {
			out = append(out, v)
		} else {
			out = append(out, []any{pk})
		}
	}
	return out
}

// sameTable makes q read the table the statement writes, alias included
// (db.Table("users AS u")).
func sameTable(q, db *gorm.DB) *gorm.DB {
	q.Statement.Table = db.Statement.Table
	q.Statement.TableExpr = db.Statement.TableExpr
	return q
}

// overlay returns copies of rows with the statement's plain new values
// applied, and whether there was anything to apply. The values come from
// the statement's destination: a map (Update, Updates(map)) or a struct
// whose non-zero fields are written (Updates(struct)); expressions such as
// gorm.Expr("n + 1") are skipped.
func overlay(db *gorm.DB, sch *schema.Schema, rows reflect.Value) (reflect.Value, bool) {
	if !rows.IsValid() || rows.Len() == 0 {
		return rows, false
	}
	type assignment struct {
		field *schema.Field
		value any
	}
	var set []assignment
	add := func(name string, v any) {
		if _, isExpr := v.(clause.Expression); isExpr {
			return
		}
		if f := sch.LookUpField(name); f != nil {
			set = append(set, assignment{f, v})
		}
	}
	ctx := db.Statement.Context
	switch d := db.Statement.Dest.(type) {
	case map[string]any:
		for k, v := range d {
			add(k, v)
		}
	default:
		dv, mv := reflect.ValueOf(db.Statement.Dest), reflect.ValueOf(db.Statement.Model)
		if dv.Kind() == reflect.Pointer && mv.Kind() == reflect.Pointer && dv.Pointer() == mv.Pointer() {
			return rows, false // Save: the row itself, re-read below
		}
		if dv = reflect.Indirect(dv); dv.Kind() != reflect.Struct || dv.Type() != sch.ModelType {
			return rows, false
		}
		for _, f := range sch.Fields {
			if v, zero := f.ValueOf(ctx, dv); !zero && f.DBName != "" {
				add(f.Name, v)
			}
		}
	}
	if len(set) == 0 {
		return rows, false
	}
	out := reflect.MakeSlice(rows.Type(), rows.Len(), rows.Len())
	reflect.Copy(out, rows)
	for i := 0; i < out.Len(); i++ {
		for _, a := range set {
			_ = a.field.Set(ctx, out.Index(i), a.value)
		}
	}
	return out, true
}
