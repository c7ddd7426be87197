// Package relation resolves the many-to-many relations that cacheme
// invalidates: a registered m2m.Table, or a join-table model that
// implements m2m.JoinModel, checked against GORM's schemas, and the join
// rows and keys of both sides of a write.
package relation

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme/m2m"
)

// Side is one side of a resolved relation.
type Side struct {
	Model  string         // the side's model type name
	Schema *schema.Schema // the side's model schema
	Column string         // the join table column that holds its key
	Keys   m2m.KeyFunc    // the side's key function
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
func Resolve(db *gorm.DB, t m2m.Table) (*Relation, error) {
	if t.Model == nil || t.Field == "" {
		return nil, fmt.Errorf("%w: Table needs Model and Field", m2m.ErrInvalid)
	}
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(t.Model); err != nil {
		return nil, fmt.Errorf("%w: model %T: %w", m2m.ErrInvalid, t.Model, err)
	}
	sch := stmt.Schema
	rel, ok := sch.Relationships.Relations[t.Field]
	if !ok {
		return nil, fmt.Errorf("%w: %s has no relation %q", m2m.ErrInvalid, sch.Name, t.Field)
	}
	if rel.Type != schema.Many2Many || rel.JoinTable == nil {
		return nil, fmt.Errorf("%w: %s.%s is %s, not many2many", m2m.ErrInvalid, sch.Name, t.Field, rel.Type)
	}
	r := &Relation{Field: t.Field, rel: rel}
	r.Owner = Side{Model: sch.Name, Schema: sch}
	r.Related = Side{Model: rel.FieldSchema.Name, Schema: rel.FieldSchema}
	if err := r.columns(); err != nil {
		return nil, fmt.Errorf("%w: %s.%s: %w", m2m.ErrInvalid, sch.Name, t.Field, err)
	}
	if err := r.setKeys(t.Keys, t.Field); err != nil {
		return nil, fmt.Errorf("%w: %s.%s: %w", m2m.ErrInvalid, sch.Name, t.Field, err)
	}
	if IsJoinModel(rel.JoinTable.ModelType) {
		return nil, fmt.Errorf("%w: %s.%s: its join model %s implements M2MCacheKeys; register the keys in one place only", m2m.ErrInvalid, sch.Name, t.Field, rel.JoinTable.Name)
	}
	return r, nil
}

// setKeys gives each side its key function from keys, by model name; on a
// self-referencing relation the other side may be named by field.
func (r *Relation) setKeys(keys map[string]m2m.KeyFunc, field string) error {
	r.Owner.Keys, r.Related.Keys = keys[r.Owner.Model], keys[r.Related.Model]
	allowed := map[string]bool{r.Owner.Model: true, r.Related.Model: true}
	if r.Owner.Model == r.Related.Model && field != "" {
		allowed[field] = true
		if k := keys[field]; k != nil {
			r.Related.Keys = k
		}
	}
	for _, s := range r.Sides() {
		if s.Keys == nil {
			return fmt.Errorf("no key function for model %q in Keys (have %v)", s.Model, names(keys))
		}
	}
	for name := range keys {
		if !allowed[name] {
			return fmt.Errorf("the key function for %q in Keys is not for a side of the relation", name)
		}
	}
	return nil
}

// IsJoinModel reports whether values of typ (or pointers to them)
// implement m2m.JoinModel.
func IsJoinModel(typ reflect.Type) bool {
	if typ == nil {
		return false
	}
	return typ.Implements(joinModel) || reflect.PointerTo(typ).Implements(joinModel)
}

var joinModel = reflect.TypeFor[m2m.JoinModel]()

// FromJoinModel resolves the relation of a join-table model that implements
// m2m.JoinModel, from its schema: each key of its M2MCacheKeys names a
// side, as GORM names the join table's relations to the two sides (the
// model's name; on a self-referencing relation the other side's field
// name), and that relation gives the side's model and column. It returns
// nil, nil for a schema whose model does not implement m2m.JoinModel.
func FromJoinModel(join *schema.Schema) (r *Relation, err error) {
	if join == nil || !IsJoinModel(join.ModelType) {
		return nil, nil
	}
	defer func() {
		if v := recover(); v != nil {
			r, err = nil, fmt.Errorf("%w: %s.M2MCacheKeys panicked: %v", m2m.ErrInvalid, join.Name, v)
		}
	}()
	jm, ok := reflect.New(join.ModelType).Elem().Interface().(m2m.JoinModel)
	if !ok {
		jm = reflect.New(join.ModelType).Interface().(m2m.JoinModel)
	}
	keys := jm.M2MCacheKeys()
	if len(keys) != 2 {
		return nil, fmt.Errorf("%w: %s.M2MCacheKeys has %d entries %v; want one for each side", m2m.ErrInvalid, join.Name, len(keys), names(keys))
	}
	r = &Relation{JoinTable: join.Table, join: join}
	for i, name := range names(keys) {
		side, err := joinSide(join, name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s.M2MCacheKeys: %w", m2m.ErrInvalid, join.Name, err)
		}
		side.Keys = keys[name]
		if side.Keys == nil {
			return nil, fmt.Errorf("%w: %s.M2MCacheKeys: nil key function for %q", m2m.ErrInvalid, join.Name, name)
		}
		if i == 0 {
			r.Owner = side
		} else {
			r.Related = side
		}
	}
	if r.Owner.Column == r.Related.Column {
		return nil, fmt.Errorf("%w: %s.M2MCacheKeys: both sides are column %s", m2m.ErrInvalid, join.Name, r.Owner.Column)
	}
	return r, nil
}

// joinSide finds the side named name of a join schema: the join table's
// relation of that name (GORM adds one per side), else the one belongs-to
// relation to a model of that name, else a field "<name>ID".
func joinSide(join *schema.Schema, name string) (Side, error) {
	side := func(rel *schema.Relationship) (Side, bool) {
		for _, ref := range rel.References {
			if ref.ForeignKey != nil && join.LookUpField(ref.ForeignKey.DBName) != nil && rel.FieldSchema != nil {
				return Side{Model: name, Schema: rel.FieldSchema, Column: ref.ForeignKey.DBName}, true
			}
		}
		return Side{}, false
	}
	if rel, ok := join.Relationships.Relations[name]; ok {
		if s, ok := side(rel); ok {
			return s, nil
		}
	}
	var found []Side
	for _, rel := range join.Relationships.Relations {
		if rel.FieldSchema != nil && rel.FieldSchema.Name == name && rel.Type == schema.BelongsTo {
			if s, ok := side(rel); ok {
				found = append(found, s)
			}
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	if f := join.LookUpField(name + "ID"); f != nil && f.DBName != "" {
		return Side{Model: name, Column: f.DBName}, nil
	}
	return Side{}, fmt.Errorf("no side %q: the join table %s has no relation or column for it (have relations %v)", name, join.Table, relationNames(join))
}

func relationNames(s *schema.Schema) []string {
	out := make([]string, 0, len(s.Relationships.Relations))
	for n := range s.Relationships.Relations {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
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
	if r.rel == nil {
		return r // from a join model: it is the join table
	}
	if r.rel.JoinTable == r.join {
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

// KeysOf returns the cache keys of both sides of the given pairs. A side
// whose key function returns no non-empty key for the ids it was given is
// an error (the other keys are still returned).
func (r *Relation) KeysOf(pairs []Pair) ([]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	owners := make([]any, 0, len(pairs))
	related := make([]any, 0, len(pairs))
	for _, p := range pairs {
		owners = append(owners, p.Owner)
		related = append(related, p.Related)
	}
	var keys []string
	var errs []error
	for i, s := range r.Sides() {
		ids := owners
		if i == 1 {
			ids = related
		}
		ids = s.ids(ids)
		got := s.Keys(ids)
		n := 0
		for _, k := range got {
			if k != "" {
				keys = append(keys, k)
				n++
			}
		}
		if n == 0 && len(ids) > 0 {
			errs = append(errs, fmt.Errorf("m2m: the key function of %s (join table %s) returned no key for ids %v", s.Model, r.JoinTable, ids))
		}
	}
	return keys, errors.Join(errs...)
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

func names(m map[string]m2m.KeyFunc) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
