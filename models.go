package cacheme

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme/m2m"
	"github.com/gormcacheme/cacheme/nodes"
)

// Keyer is implemented by models with one cache key (upstream cache_key):
// when GORM writes the row, every member of the group
// "<prefix><CacheKey()>:invalid" is invalidated.
type Keyer interface {
	CacheKey() string
}

// MultiKeyer is implemented by models with several cache keys.
type MultiKeyer interface {
	CacheKey() []string
}

// TableGroup returns the name of the model-wide group of a table: every
// write GORM makes to the table invalidates it, whatever rows it touches.
// A memoized function that depends on a whole table (a list, a count) lists
// it in its invalid keys.
func TableGroup(table string) string { return "table:" + table }

// modelNode is a registered ModelInvalidNode.
type modelNode struct {
	typ    reflect.Type // the node's struct type
	fields []string     // node field name i is filled from the row field fields[i]
}

// fill sets the node n from row.
func (mn modelNode) fill(ctx context.Context, sch *schema.Schema, row, n reflect.Value) {
	for i, name := range mn.fields {
		if name == "" {
			continue
		}
		fv, _ := sch.LookUpField(name).ValueOf(ctx, row)
		v := reflect.ValueOf(fv)
		for v.IsValid() && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v = reflect.Value{}
				break
			}
			v = v.Elem()
		}
		if !v.IsValid() {
			continue // a nil pointer leaves the node's zero value
		}
		if dst := n.Field(i); dst.Kind() == reflect.String && v.Kind() != reflect.String {
			dst.SetString(fmt.Sprint(v.Interface())) // 65 is "65", not "A"
		} else {
			dst.Set(v.Convert(dst.Type()))
		}
	}
}

// m2mNode is a registered M2MInvalidNode.
type m2mNode struct {
	typ                 reflect.Type
	ownerIdx, relIdx    int // field indexes of the owner and related sides
	ownerStr, relString bool
}

// bindings are the plugin's model registrations, resolved against one
// *gorm.DB.
type bindings struct {
	mu      sync.RWMutex             // protects everything below
	db      *gorm.DB                 // the database the plugin was initialized with
	tables  []m2m.Table              // registered before Initialize
	nodes   []nodes.InvalidNode      // registered before Initialize
	all     []*m2mBinding            // every relation, in registration order
	sides   map[string][]*m2mBinding // by side model table name
	byModel map[string][]modelNode   // by model table name
}

type m2mBinding struct {
	rel   *m2m.Relation
	nodes []m2mNode
}

// RegisterM2M registers the key functions of many-to-many relations. Called
// before db.Use(p), the relations are checked by Initialize; called after, at
// once. An unknown model, field or a missing key function is an error
// wrapping m2m.ErrInvalid.
func (p *Plugin) RegisterM2M(tables ...m2m.Table) error {
	if err := p.Err(); err != nil {
		return err
	}
	p.bind.mu.Lock()
	defer p.bind.mu.Unlock()
	if p.bind.db == nil {
		p.bind.tables = append(p.bind.tables, tables...)
		return nil
	}
	for _, t := range tables {
		if err := p.bind.addTable(t); err != nil {
			return err
		}
	}
	return nil
}

// RegisterNodes registers ModelInvalidNodes and M2MInvalidNodes (zero values
// of their types will do). Called before db.Use(p), they are checked by
// Initialize; called after, at once. A node whose fields do not match its
// model is an error wrapping ErrInvalidSpec; an M2MInvalidNode needs its
// relation registered with RegisterM2M first.
func (p *Plugin) RegisterNodes(ns ...nodes.InvalidNode) error {
	if err := p.Err(); err != nil {
		return err
	}
	p.bind.mu.Lock()
	defer p.bind.mu.Unlock()
	if p.bind.db == nil {
		p.bind.nodes = append(p.bind.nodes, ns...)
		return nil
	}
	for _, n := range ns {
		if err := p.bind.addNode(n); err != nil {
			return err
		}
	}
	return nil
}

// resolve binds the registrations made before Initialize to db.
func (b *bindings) resolve(db *gorm.DB) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db != nil && b.db != db {
		return fmt.Errorf("%w: the plugin is already used by another *gorm.DB", ErrInvalidSpec)
	}
	b.db = db
	for _, t := range b.tables {
		if err := b.addTable(t); err != nil {
			return err
		}
	}
	for _, n := range b.nodes {
		if err := b.addNode(n); err != nil {
			return err
		}
	}
	b.tables, b.nodes = nil, nil
	return nil
}

func (b *bindings) addTable(t m2m.Table) error {
	rel, err := m2m.Resolve(b.db, t)
	if err != nil {
		return err
	}
	if b.sides == nil {
		b.sides = map[string][]*m2mBinding{}
	}
	mb := &m2mBinding{rel: rel}
	b.all = append(b.all, mb)
	b.sides[rel.Owner.Schema.Table] = append(b.sides[rel.Owner.Schema.Table], mb)
	if rel.Related.Schema.Table != rel.Owner.Schema.Table {
		b.sides[rel.Related.Schema.Table] = append(b.sides[rel.Related.Schema.Table], mb)
	}
	return nil
}

// replace swaps binding old for nb everywhere it is listed.
func (b *bindings) replace(old, nb *m2mBinding) {
	all := make([]*m2mBinding, len(b.all)) // readers hold the old slice
	for i, x := range b.all {
		if x == old {
			x = nb
		}
		all[i] = x
	}
	b.all = all
	for _, m := range []map[string][]*m2mBinding{b.sides} {
		for k, list := range m {
			out := make([]*m2mBinding, len(list))
			for i, x := range list {
				if x == old {
					x = nb
				}
				out[i] = x
			}
			m[k] = out
		}
	}
}

func (b *bindings) addNode(n nodes.InvalidNode) error {
	typ := reflect.TypeOf(n)
	for typ != nil && typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ == nil || typ.Kind() != reflect.Struct {
		return fmt.Errorf("%w: node %T is not a struct", ErrInvalidSpec, n)
	}
	switch v := n.(type) {
	case nodes.M2MInvalidNode:
		model, field := v.M2M()
		stmt := &gorm.Statement{DB: b.db}
		if err := stmt.Parse(model); err != nil {
			return fmt.Errorf("%w: node %s: model %T: %w", ErrInvalidSpec, typ.Name(), model, err)
		}
		var mb *m2mBinding
		for _, c := range b.sides[stmt.Schema.Table] {
			if c.rel.Field == field && c.rel.Owner.Schema == stmt.Schema {
				mb = c
			}
		}
		if mb == nil {
			return fmt.Errorf("%w: node %s: relation %s.%s is not registered with RegisterM2M", ErrInvalidSpec, typ.Name(), stmt.Schema.Name, field)
		}
		if mb.rel.Owner.Model == mb.rel.Related.Model {
			return fmt.Errorf("%w: node %s: both sides of %s.%s are %s, so one field cannot tell them apart; use Keys in RegisterM2M instead", ErrInvalidSpec, typ.Name(), stmt.Schema.Name, field, mb.rel.Owner.Model)
		}
		mn := m2mNode{typ: typ}
		for i, side := range []m2m.Side{mb.rel.Owner, mb.rel.Related} {
			f, ok := typ.FieldByName(side.Model)
			if !ok || (f.Type.Kind() != reflect.String && f.Type.Kind() != reflect.Interface) {
				return fmt.Errorf("%w: node %s needs a string field %s for its side of %s.%s", ErrInvalidSpec, typ.Name(), side.Model, stmt.Schema.Name, field)
			}
			if i == 0 {
				mn.ownerIdx, mn.ownerStr = f.Index[0], f.Type.Kind() == reflect.String
			} else {
				mn.relIdx, mn.relString = f.Index[0], f.Type.Kind() == reflect.String
			}
		}
		// Bindings are read without the lock once fetched: replace, never
		// modify, a binding in use.
		nb := &m2mBinding{rel: mb.rel, nodes: append(mb.nodes[:len(mb.nodes):len(mb.nodes)], mn)}
		b.replace(mb, nb)
	case nodes.ModelInvalidNode:
		stmt := &gorm.Statement{DB: b.db}
		if err := stmt.Parse(v.Model()); err != nil {
			return fmt.Errorf("%w: node %s: model %T: %w", ErrInvalidSpec, typ.Name(), v.Model(), err)
		}
		mn := modelNode{typ: typ}
		for i := 0; i < typ.NumField(); i++ {
			sf := typ.Field(i)
			if !sf.IsExported() {
				mn.fields = append(mn.fields, "")
				continue
			}
			f := stmt.Schema.LookUpField(sf.Name)
			if f == nil {
				return fmt.Errorf("%w: node %s: model %s has no field %s", ErrInvalidSpec, typ.Name(), stmt.Schema.Name, sf.Name)
			}
			if !fieldFits(f.FieldType, sf.Type) {
				return fmt.Errorf("%w: node %s: field %s is %s, model %s has %s", ErrInvalidSpec, typ.Name(), sf.Name, sf.Type, stmt.Schema.Name, f.FieldType)
			}
			mn.fields = append(mn.fields, f.Name)
		}
		if b.byModel == nil {
			b.byModel = map[string][]modelNode{}
		}
		b.byModel[stmt.Schema.Table] = append(b.byModel[stmt.Schema.Table], mn)
	default:
		return fmt.Errorf("%w: node %s is neither a ModelInvalidNode nor an M2MInvalidNode", ErrInvalidSpec, typ.Name())
	}
	return nil
}

// fieldFits reports whether a model field of type from can fill a node
// field of type to: by conversion between like kinds, or as text.
func fieldFits(from, to reflect.Type) bool {
	for from.Kind() == reflect.Pointer {
		from = from.Elem()
	}
	if to.Kind() == reflect.String {
		return true
	}
	if !from.ConvertibleTo(to) {
		return false
	}
	return from.Kind() != reflect.String || to.Kind() == reflect.String || to.Kind() == reflect.Interface
}

// rowGroups returns the groups to invalidate for rows of sch held in v (a
// struct or a slice of them) written to table: their cache keys, their
// model nodes and the table's group.
func (p *Plugin) rowGroups(ctx context.Context, sch *schema.Schema, table string, v reflect.Value) []string {
	groups := []string{TableGroup(table)}
	p.bind.mu.RLock()
	mns := p.bind.byModel[sch.Table]
	p.bind.mu.RUnlock()
	m2m.EachRow(v, func(row reflect.Value) {
		groups = append(groups, cacheKeys(row)...)
		for _, mn := range mns {
			n := reflect.New(mn.typ).Elem()
			mn.fill(ctx, sch, row, n)
			if in, ok := n.Interface().(nodes.InvalidNode); ok {
				groups = append(groups, in.Key())
			}
		}
	})
	return groups
}

// cacheKeys returns the keys of a row that implements Keyer or MultiKeyer.
func cacheKeys(row reflect.Value) []string {
	vals := []reflect.Value{row}
	if row.CanAddr() {
		vals = append(vals, row.Addr())
	}
	for _, v := range vals {
		if !v.CanInterface() {
			continue
		}
		switch k := v.Interface().(type) {
		case Keyer:
			return []string{k.CacheKey()}
		case MultiKeyer:
			return k.CacheKey()
		}
	}
	return nil
}

// joinBindings returns the relations whose join table is table now (as the
// schema has them, db.SetupJoinTable included).
func (p *Plugin) joinBindings(table string) []*m2mBinding {
	p.bind.mu.RLock()
	all := p.bind.all
	p.bind.mu.RUnlock()
	var out []*m2mBinding
	for _, mb := range all {
		if live := mb.rel.Live(); live.JoinTable == table {
			out = append(out, &m2mBinding{rel: live, nodes: mb.nodes})
		}
	}
	return out
}

// joinGroups returns the groups of join rows of a registered join table.
func (p *Plugin) joinGroups(sch *schema.Schema, v reflect.Value) []string {
	var groups []string
	for _, mb := range p.joinBindings(sch.Table) {
		pairs := mb.rel.PairsOf(sch, v)
		groups = append(groups, mb.groupsOf(pairs)...)
	}
	return groups
}

// groupsOf returns the keys of both sides of pairs, and their m2m nodes.
func (mb *m2mBinding) groupsOf(pairs []m2m.Pair) []string {
	groups := mb.rel.KeysOf(pairs)
	for _, mn := range mb.nodes {
		for _, pr := range pairs {
			groups = append(groups, mn.key(pr.Owner, nodes.All), mn.key(nodes.All, pr.Related))
		}
	}
	return groups
}

func (mn m2mNode) key(owner, related any) string {
	return mn.node(owner, related).Interface().(nodes.InvalidNode).Key()
}

// node returns the node with the given sides.
func (mn m2mNode) node(owner, related any) reflect.Value {
	n := reflect.New(mn.typ).Elem()
	set := func(i int, str bool, v any) {
		if str {
			n.Field(i).SetString(fmt.Sprint(v))
		} else {
			n.Field(i).Set(reflect.ValueOf(v))
		}
	}
	set(mn.ownerIdx, mn.ownerStr, owner)
	set(mn.relIdx, mn.relString, related)
	return n
}

// partnerGroups reads the join rows of every registered relation in which
// rows of sch (primary keys pks) take part, and returns the groups of both
// sides: deleting a row must invalidate its partners' many-to-many keys.
func (p *Plugin) partnerGroups(db *gorm.DB, sch *schema.Schema, pks []any) ([]string, error) {
	if len(pks) == 0 {
		return nil, nil
	}
	p.bind.mu.RLock()
	mbs := p.bind.sides[sch.Table]
	p.bind.mu.RUnlock()
	var groups []string
	for _, mb := range mbs {
		mb := &m2mBinding{rel: mb.rel.Live(), nodes: mb.nodes}
		for _, chunk := range chunks(pks, maxParams/2) {
			var conds []clause.Expression
			for _, side := range mb.rel.Sides() {
				if side.Schema.Table == sch.Table {
					conds = append(conds, clause.IN{Column: clause.Column{Name: side.Column}, Values: chunk})
				}
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
			pairs := make([]m2m.Pair, 0, len(rows))
			for _, r := range rows {
				pairs = append(pairs, m2m.Pair{Owner: r[mb.rel.Owner.Column], Related: r[mb.rel.Related.Column]})
			}
			groups = append(groups, mb.groupsOf(pairs)...)
		}
	}
	return groups, nil
}

// subQuery returns a fresh session on the statement's connection (its
// transaction, if any), without hooks or soft-delete scoping.
func subQuery(db *gorm.DB) *gorm.DB {
	q := db.Session(&gorm.Session{NewDB: true, SkipHooks: true, Context: db.Statement.Context})
	q.Statement.ConnPool = db.Statement.ConnPool
	return q.Unscoped()
}

// InvalidateModels invalidates what a write of the given rows would: the
// groups of their cache keys, their registered model nodes, their tables'
// groups, and, for rows taking part in a registered many-to-many relation,
// the keys of both sides of their join rows. Use it after a write GORM
// cannot see (db.Exec with raw SQL); it reads the join rows through the
// database the plugin was initialized with. Rows are model values or
// pointers to them.
func (p *Plugin) InvalidateModels(ctx context.Context, rows ...any) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	db := p.db()
	if db == nil {
		return 0, fmt.Errorf("%w: InvalidateModels needs db.Use(plugin) first", ErrInvalidSpec)
	}
	var groups []string
	for _, row := range rows {
		stmt := &gorm.Statement{DB: db}
		if err := stmt.Parse(row); err != nil {
			return 0, fmt.Errorf("%w: %T is not a model: %w", ErrInvalidSpec, row, err)
		}
		// An addressable copy, so that pointer-receiver CacheKey methods count.
		rv := reflect.New(stmt.Schema.ModelType)
		if v := reflect.Indirect(reflect.ValueOf(row)); v.Type() == stmt.Schema.ModelType {
			rv.Elem().Set(v)
		} else {
			rv = reflect.ValueOf(row)
		}
		groups = append(groups, p.rowGroups(ctx, stmt.Schema, stmt.Schema.Table, rv)...)
		q := db.WithContext(ctx)
		g, err := p.partnerGroups(q, stmt.Schema, primaryKeys(q, stmt.Schema, rv))
		if err != nil {
			return 0, err
		}
		groups = append(groups, g...)
	}
	return p.InvalidateGroups(ctx, groups...)
}

// FillNode returns the invalid node of type N for a row, as the plugin
// builds it when GORM writes the row (upstream Invalid(instance=row)). For
// a ModelInvalidNode, its fields come from the row's fields of the same
// name; for an M2MInvalidNode, the row's side holds its primary key and the
// other side nodes.All. N must be registered with RegisterNodes.
func FillNode[N nodes.InvalidNode](p *Plugin, row any) (N, error) {
	var zero N
	if err := p.Err(); err != nil {
		return zero, err
	}
	db := p.db()
	if db == nil {
		return zero, fmt.Errorf("%w: FillNode needs db.Use(plugin) first", ErrInvalidSpec)
	}
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(row); err != nil {
		return zero, fmt.Errorf("%w: %T is not a model: %w", ErrInvalidSpec, row, err)
	}
	sch, rv := stmt.Schema, reflect.Indirect(reflect.ValueOf(row))
	typ := reflect.TypeFor[N]()
	p.bind.mu.RLock()
	defer p.bind.mu.RUnlock()
	for _, mn := range p.bind.byModel[sch.Table] {
		if mn.typ == typ {
			n := reflect.New(typ).Elem()
			mn.fill(context.Background(), sch, rv, n)
			return n.Interface().(N), nil
		}
	}
	for _, mb := range p.bind.sides[sch.Table] {
		for _, mn := range mb.nodes {
			if mn.typ != typ {
				continue
			}
			pks := primaryKeys(db, sch, reflect.ValueOf(row))
			if len(pks) != 1 {
				return zero, fmt.Errorf("%w: %s row has no primary key", ErrInvalidSpec, sch.Name)
			}
			owner, related := any(nodes.All), any(nodes.All)
			if mb.rel.Owner.Schema == sch {
				owner = pks[0]
			} else {
				related = pks[0]
			}
			return mn.node(owner, related).Interface().(N), nil
		}
	}
	return zero, fmt.Errorf("%w: node %s is not registered for model %s", ErrInvalidSpec, typ.Name(), sch.Name)
}

func (p *Plugin) db() *gorm.DB {
	p.bind.mu.RLock()
	defer p.bind.mu.RUnlock()
	return p.bind.db
}
