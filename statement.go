package cacheme

import (
	"reflect"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme/internal/relation"
)

// What a GORM write statement touches, read off the statement alone: the
// table it writes, the rows it creates, the conditions that choose the rows
// it updates or deletes, the new values it sets, and the primary keys of
// rows. Nothing here reads the database or Redis.

// writtenTable returns the name of the table the statement writes, without
// an alias: db.Table("archive") writes archive, db.Table("users AS u")
// users.
func writtenTable(db *gorm.DB) string {
	if e := db.Statement.TableExpr; e != nil {
		if f := strings.Fields(e.SQL); len(f) > 0 {
			return strings.Trim(f[0], "`\"")
		}
	}
	if db.Statement.Table != "" || db.Statement.Schema == nil {
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

// writeConds returns the conditions that choose the rows an update or a
// delete changes: the statement's WHERE and the primary keys GORM adds
// from the destination and from a distinct Model
// (db.Model(&u).Delete(&User{})).
func writeConds(db *gorm.DB) []clause.Expression {
	var conds []clause.Expression
	if c, ok := db.Statement.Clauses["WHERE"]; ok {
		if w, ok := c.Expression.(clause.Where); ok {
			conds = append(conds, w.Exprs...)
		}
	}
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
	return conds
}

// upsertConds returns, for a create with an ON CONFLICT clause that may
// update existing rows, the condition matching the rows it may overwrite
// (by the conflict columns, else the primary key), whether the statement
// is such an upsert, and whether the condition covers every row (a row
// without conflict values, or an unknown column, leaves it partial).
func upsertConds(db *gorm.DB) (cond clause.Expression, upsert, complete bool) {
	c, ok := db.Statement.Clauses["ON CONFLICT"]
	if !ok {
		return nil, false, true
	}
	oc, ok := c.Expression.(clause.OnConflict)
	if !ok || oc.DoNothing {
		return nil, false, true
	}
	sch := db.Statement.Schema
	cols := make([]string, 0, len(oc.Columns))
	for _, col := range oc.Columns {
		cols = append(cols, col.Name)
	}
	if len(cols) == 0 {
		cols = sch.PrimaryFieldDBNames
	}
	complete = true
	var ors []clause.Expression
	eachRow(db.Statement.ReflectValue, func(row reflect.Value) {
		var and []clause.Expression
		for _, col := range cols {
			f := sch.LookUpField(col)
			if f == nil {
				complete = false
				return
			}
			v, zero := f.ValueOf(db.Statement.Context, row)
			if zero {
				return // a new row: nothing to overwrite
			}
			and = append(and, clause.Eq{Column: clause.Column{Name: f.DBName}, Value: v})
		}
		ors = append(ors, clause.And(and...))
	})
	if len(ors) == 0 {
		return nil, true, complete
	}
	return clause.Or(ors...), true, complete
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
			return rows, false // Save: the row itself, re-read after the write
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

// primaryKeys returns the primary key values of rows, one value per row
// ([]any for a composite key).
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

// pkRows turns primaryKeys' values back into one []any per row.
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

// subQuery returns a fresh session on the statement's connection (its
// transaction, if any), without hooks or soft-delete scoping.
func subQuery(db *gorm.DB) *gorm.DB {
	q := db.Session(&gorm.Session{NewDB: true, SkipHooks: true, Context: db.Statement.Context})
	q.Statement.ConnPool = db.Statement.ConnPool
	return q.Unscoped()
}

// sameTable makes q read the table the statement writes, alias included
// (db.Table("users AS u")).
func sameTable(q, db *gorm.DB) *gorm.DB {
	q.Statement.Table = db.Statement.Table
	q.Statement.TableExpr = db.Statement.TableExpr
	return q
}

// eachRow calls fn for each struct row in v: a struct, a pointer to one, or
// a slice or array of structs or of pointers to them.
func eachRow(v reflect.Value, fn func(reflect.Value)) { relation.EachRow(v, fn) }
