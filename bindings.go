package cacheme

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme/internal/relation"
	"github.com/gormcacheme/cacheme/m2m"
	"github.com/gormcacheme/cacheme/nodes"
)

// Registrations: many-to-many key functions (RegisterM2M, or a join-table
// model's M2MCacheKeys) and invalid nodes bound to models (RegisterNodes),
// resolved against the *gorm.DB the plugin is used with.

// bindings are the plugin's model registrations, resolved against one
// *gorm.DB, and the join-table models (m2m.JoinModel) found since.
type bindings struct {
	mu      sync.RWMutex             // protects everything below
	db      *gorm.DB                 // the database the plugin was initialized with
	tables  []m2m.Table              // registered before Initialize
	nodes   []nodes.InvalidNode      // registered before Initialize
	all     []*m2mBinding            // every registered relation, in registration order
	sides   map[string][]*m2mBinding // registered relations by side model table name
	byModel map[string][]modelNode   // by model table name

	// Join-table models, by their schema (nil: not a valid one, reported
	// once), and those found so far by side model table name.
	models     map[*schema.Schema]*m2mBinding
	modelSides map[string][]*m2mBinding
}

// m2mBinding is one many-to-many relation and its nodes.
type m2mBinding struct {
	rel   *relation.Relation
	nodes []m2mNode
}

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
	rel, err := relation.Resolve(b.db, t)
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
		for i, side := range mb.rel.Sides() {
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

// joinBindings returns the relations whose join table sch is now (as the
// schema has them, db.SetupJoinTable included): registered ones, and the
// relation of sch's model if it implements m2m.JoinModel. A join table
// that has both is reported (ErrInvalidSpec) and gets both.
func (p *Plugin) joinBindings(ctx context.Context, sch *schema.Schema) []*m2mBinding {
	p.bind.mu.RLock()
	all := p.bind.all
	p.bind.mu.RUnlock()
	var out []*m2mBinding
	for _, mb := range all {
		if live := mb.rel.Live(); live.JoinTable == sch.Table {
			out = append(out, &m2mBinding{rel: live, nodes: mb.nodes})
		}
	}
	if jm := p.joinModel(ctx, sch); jm != nil {
		if len(out) > 0 {
			p.report(ctx, fmt.Errorf("%w: join table %s has keys from RegisterM2M and from %s.M2MCacheKeys; register them in one place only", ErrInvalidSpec, sch.Table, sch.Name))
		}
		out = append(out, jm)
	}
	return out
}

// joinModel returns the relation of a join-table model (m2m.JoinModel), or
// nil. A model whose keys do not match its schema is reported once: its
// writes invalidate only the table's group.
func (p *Plugin) joinModel(ctx context.Context, sch *schema.Schema) *m2mBinding {
	if sch == nil || !relation.IsJoinModel(sch.ModelType) {
		return nil
	}
	p.bind.mu.RLock()
	mb, seen := p.bind.models[sch]
	p.bind.mu.RUnlock()
	if seen {
		return mb
	}
	rel, err := relation.FromJoinModel(sch)
	p.bind.mu.Lock()
	defer p.bind.mu.Unlock()
	if mb, seen = p.bind.models[sch]; seen {
		return mb
	}
	if p.bind.models == nil {
		p.bind.models, p.bind.modelSides = map[*schema.Schema]*m2mBinding{}, map[string][]*m2mBinding{}
	}
	if err != nil {
		p.report(ctx, fmt.Errorf("%w: %w", ErrInvalidSpec, err))
	} else {
		mb = &m2mBinding{rel: rel}
		for _, s := range rel.Sides() {
			if s.Schema != nil {
				p.bind.modelSides[s.Schema.Table] = append(p.bind.modelSides[s.Schema.Table], mb)
			}
		}
	}
	p.bind.models[sch] = mb
	return mb
}

// sideBindings returns the relations in which rows of sch take part: the
// registered ones, and those of join-table models declared by sch's
// relations or found before.
func (p *Plugin) sideBindings(ctx context.Context, sch *schema.Schema) []*m2mBinding {
	for _, rel := range sch.Relationships.Many2Many {
		if rel.JoinTable != nil {
			p.joinModel(ctx, rel.JoinTable)
		}
	}
	p.bind.mu.RLock()
	defer p.bind.mu.RUnlock()
	out := make([]*m2mBinding, 0, len(p.bind.sides[sch.Table])+len(p.bind.modelSides[sch.Table]))
	for _, mb := range p.bind.sides[sch.Table] {
		out = append(out, &m2mBinding{rel: mb.rel.Live(), nodes: mb.nodes})
	}
	return append(out, p.bind.modelSides[sch.Table]...)
}

// bindingsOfJoinTable returns the relations whose join table is named
// table: registered ones and join-table models found so far.
func (p *Plugin) bindingsOfJoinTable(ctx context.Context, table string) []*m2mBinding {
	p.bind.mu.RLock()
	defer p.bind.mu.RUnlock()
	var out []*m2mBinding
	for _, mb := range p.bind.all {
		if live := mb.rel.Live(); live.JoinTable == table {
			out = append(out, &m2mBinding{rel: live, nodes: mb.nodes})
		}
	}
	for _, mb := range p.bind.models {
		if mb != nil && mb.rel.JoinTable == table {
			out = append(out, mb)
		}
	}
	return out
}

// isJoinTable reports whether writes of sch are join-table writes.
func (p *Plugin) isJoinTable(ctx context.Context, sch *schema.Schema) bool {
	return len(p.joinBindings(ctx, sch)) > 0
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
