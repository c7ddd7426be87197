// Package m2m resolves many-to-many relations for cache invalidation.
//
// A many-to-many relation is stored in a join table. When GORM writes the
// join table (Association Append, Delete, Replace and Clear, creating a row
// with its associations, or deleting a row that still has join rows), both
// sides change: "the users of book 7" and "the books of user 12". A Table
// registers, for one relation, a key function for each side, as
// django-cacheme's m2m_cache_keys does:
//
//	m2m.Table{
//		Model: &Book{}, Field: "Users",
//		Keys: map[string]m2m.KeyFunc{
//			"Book": m2m.Format("Book:%v:users"),
//			"User": m2m.Format("User:%v:books"),
//		},
//	}
//
// Keys is keyed by the Go type name of each side's model; each function gets
// primary keys of its own model and returns the cache keys (invalidation
// group names) of that side. book.Users.Append(u1, u2) then invalidates
// Book:<b>:users, User:<u1>:books and User:<u2>:books.
//
// Resolve checks a Table against a GORM schema: an unknown model, field, or
// a field that is not many2many, or a missing key function is an error.
package m2m

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// KeyFunc returns the cache keys of one side of a relation for the given
// primary keys of that side's model.
type KeyFunc func(ids []any) []string

// Format returns the KeyFunc that formats each id with format, which has
// one verb for the id: Format("User:%v:books") gives "User:12:books" for 12.
func Format(format string) KeyFunc {
	return func(ids []any) []string {
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = fmt.Sprintf(format, id)
		}
		return keys
	}
}

// Table registers the key functions of one many2many relation.
type Table struct {
	// Model is a value of a model that declares the relation, e.g. &Book{}.
	Model any
	// Field is the name of the many2many field on Model, e.g. "Users".
	Field string
	// Keys maps the type name of each side's model to its key function.
	// Both sides need one; a self-referencing relation needs one entry.
	Keys map[string]KeyFunc
}

// ErrInvalid is the error (matched with errors.Is) for a Table that does not
// match the schema.
var ErrInvalid = errors.New("m2m: invalid relation")

// Side is one side of a resolved relation.
type Side struct {
	Model  string         // the side's model type name
	Schema *schema.Schema // the side's model schema
	Column string         // the join table column that holds its key
	Keys   KeyFunc        // the side's key function
}

// Relation is a resolved Table.
type Relation struct {
	JoinTable string // the join table's name
	Owner     Side   // the side of the model that declares the field
	Related   Side   // the other side
	Field     string // the relation field

	rel  *schema.Relationship // the schema's relation, which SetupJoinTable may change later
	join *schema.Schema       // rel.JoinTable when the columns were read
}

// Sides returns both sides, owner first.
func (r *Relation) Sides() [2]Side { return [2]Side{r.Owner, r.Related} }

// Resolve checks t against db's schemas and returns the relation.
func Resolve(db *gorm.DB, t Table) (*Relation, error) {
	if t.Model == nil || t.Field == "" {
		return nil, fmt.Errorf("%w: Table needs Model and Field", ErrInvalid)
	}
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(t.Model); err != nil {
		return nil, fmt.Errorf("%w: model %T: %w", ErrInvalid, t.Model, err)
	}
	sch := stmt.Schema
	rel, ok := sch.Relationships.Relations[t.Field]
	if !ok {
		return nil, fmt.Errorf("%w: %s has no relation %q", ErrInvalid, sch.Name, t.Field)
	}
	if rel.Type != schema.Many2Many || rel.JoinTable == nil {
		return nil, fmt.Errorf("%w: %s.%s is %s, not many2many", ErrInvalid, sch.Name, t.Field, rel.Type)
	}
	r := &Relation{Field: t.Field, rel: rel}
	r.Owner = Side{Model: sch.Name, Schema: sch}
	r.Related = Side{Model: rel.FieldSchema.Name, Schema: rel.FieldSchema}
	if err := r.columns(); err != nil {
		return nil, fmt.Errorf("%w: %s.%s: %w", ErrInvalid, sch.Name, t.Field, err)
	}
	for _, s := range []*Side{&r.Owner, &r.Related} {
		s.Keys = t.Keys[s.Model]
		if s.Keys == nil {
			return nil, fmt.Errorf("%w: %s.%s: Keys has no entry for model %q (have %v)", ErrInvalid, sch.Name, t.Field, s.Model, names(t.Keys))
		}
	}
	for name := range t.Keys {
		if name != r.Owner.Model && name != r.Related.Model {
			return nil, fmt.Errorf("%w: %s.%s: Keys has an entry for %q, which is not a side of the relation", ErrInvalid, sch.Name, t.Field, name)
		}
	}
	return r, nil
}

// columns reads the join table and its key columns from the schema.
func (r *Relation) columns() error {
	rel := r.rel
	if rel.JoinTable == nil {
		return errors.New("no join table")
	}
	r.JoinTable, r.join = rel.JoinTable.Table, rel.JoinTable
	r.Owner.Column, r.Related.Column = "", ""
	for _, ref := range rel.References {
		if ref.PrimaryKey == nil || ref.ForeignKey == nil {
			continue
		}
		if !ref.PrimaryKey.PrimaryKey {
			return fmt.Errorf("the join table %s references %s, which is not a primary key", r.JoinTable, ref.PrimaryKey.Name)
		}
		col := &r.Related.Column
		if ref.OwnPrimaryKey {
			col = &r.Owner.Column
		}
		if *col != "" {
			return fmt.Errorf("composite primary keys are not supported (join table %s)", r.JoinTable)
		}
		*col = ref.ForeignKey.DBName
	}
	if r.Owner.Column == "" || r.Related.Column == "" {
		return fmt.Errorf("join table %s has no key column for both sides", r.JoinTable)
	}
	return nil
}

// Live returns the relation as the schema has it now: db.SetupJoinTable,
// called after Resolve, may have given it another join table. If the
// schema's relation is no longer usable, Live returns r.
func (r *Relation) Live() *Relation {
	if r.rel == nil || r.rel.JoinTable == r.join {
		return r
	}
	live := *r
	if err := live.columns(); err != nil {
		return r
	}
	return &live
}

// Pair is one join row: a key of the owner side and one of the related side.
type Pair struct {
	Owner   any // primary key of the owner side's row
	Related any // primary key of the related side's row
}

// PairsOf reads the join rows in v (a join-table struct, or a slice or array
// of them or of pointers to them) as parsed by sch.
func (r *Relation) PairsOf(sch *schema.Schema, v reflect.Value) []Pair {
	of, rf := sch.LookUpField(r.Owner.Column), sch.LookUpField(r.Related.Column)
	if of == nil || rf == nil {
		return nil
	}
	var out []Pair
	EachRow(v, func(row reflect.Value) {
		o, oz := of.ValueOf(context.Background(), row)
		rel, rz := rf.ValueOf(context.Background(), row)
		if !oz && !rz {
			out = append(out, Pair{Owner: o, Related: rel})
		}
	})
	return out
}

// KeysOf returns the cache keys of both sides of the given pairs.
func (r *Relation) KeysOf(pairs []Pair) []string {
	if len(pairs) == 0 {
		return nil
	}
	owners := make([]any, 0, len(pairs))
	related := make([]any, 0, len(pairs))
	for _, p := range pairs {
		owners = append(owners, p.Owner)
		related = append(related, p.Related)
	}
	keys := r.Owner.Keys(r.Owner.ids(owners))
	return append(keys, r.Related.Keys(r.Related.ids(related))...)
}

// ids returns the distinct keys in ids, each of the type of the side's
// primary key (drivers return int64 where the model has uint), so that a
// key function sees one type whatever write produced the ids.
func (s Side) ids(ids []any) []any {
	var pk reflect.Type
	if f := s.Schema.PrioritizedPrimaryField; f != nil {
		pk = f.FieldType
	}
	for i, id := range ids {
		v := reflect.ValueOf(id)
		if pk == nil || !v.IsValid() || v.Type() == pk {
			continue
		}
		if numeric(v.Kind()) && numeric(pk.Kind()) || v.Kind() == reflect.String && pk.Kind() == reflect.String {
			ids[i] = v.Convert(pk).Interface()
		} else if b, ok := id.([]byte); ok && pk.Kind() == reflect.String {
			ids[i] = string(b)
		}
	}
	return dedupe(ids)
}

func numeric(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Uint64
}

// EachRow calls fn for each struct row in v: a struct, a pointer to one, or
// a slice or array of structs or of pointers to them.
func EachRow(v reflect.Value, fn func(reflect.Value)) {
	v = reflect.Indirect(v)
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if e := reflect.Indirect(v.Index(i)); e.Kind() == reflect.Struct {
				fn(e)
			}
		}
	case reflect.Struct:
		fn(v)
	}
}

func dedupe(ids []any) []any {
	seen := map[string]bool{}
	out := ids[:0:0]
	for _, id := range ids {
		k := fmt.Sprint(id)
		if !seen[k] {
			seen[k] = true
			out = append(out, id)
		}
	}
	return out
}

func names(m map[string]KeyFunc) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
