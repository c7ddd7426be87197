package cacheme

import (
	"context"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// Conjunctions: what a read depends on, precisely enough that a write
// invalidates only the reads it can change (django-cacheops' scheme).
//
// A read of table t whose WHERE is a conjunction of equalities on t's
// columns (status = 'a' AND author_id = 5) depends only on the rows that
// satisfy it: it joins the group "conj:t:author_id=5&status=a". A write of
// a row of t invalidates, for every scheme of t (the sorted column lists
// that cached reads of t used, kept in Redis, see schemes.go), the
// conjunction its old and its new values satisfy. A read whose condition
// on t is not such a conjunction (OR at the top level, ranges, LIKE, raw
// fragments, sub-queries) depends on the whole table: it joins
// TableGroup(t), which every write of t invalidates.
//
// Invariant (what makes it safe): a conjunction names a superset of the
// rows a read can return. Terms are only ever dropped from a top-level AND,
// never added, and every value is put in one canonical form by the
// column's Go type on both sides (canonical): the read's literal is first
// converted to the field's type, the row's value is read from the field.
// Values whose equality the database may judge differently from their
// canonical text (floats, times, long values) make no terms: a read drops
// them, and a row never matches a term of their column. A read whose
// tables cannot all be named (raw SQL, a sub-query on an unknown table)
// is not cached at all.

const (
	conjPrefix = "conj:"
	// maxConjs bounds the conjunctions of one read (an IN list is one
	// conjunction per value): a longer disjunction drops its term.
	maxConjs = 64
	// maxTermValue bounds a term's canonical value: a longer one makes no
	// term, and a row whose value is longer matches no term.
	maxTermValue = 256
	// nullValue is the canonical form of SQL NULL.
	nullValue = "\x01null"
)

// conj is one conjunction of equalities on the columns of one table.
type conj struct {
	table string
	terms []term // sorted by column, one per column
}

type term struct{ col, val string }

// scheme returns the sorted column list of c ("author_id,status").
func (c conj) scheme() string {
	cols := make([]string, len(c.terms))
	for i, t := range c.terms {
		cols[i] = t.col
	}
	return strings.Join(cols, ",")
}

// group returns the invalidation group of c.
func (c conj) group() string {
	return conjGroupName(c.table, c.terms)
}

// conjGroupName names the group of the conjunction terms (sorted by
// column) of table.
func conjGroupName(table string, terms []term) string {
	var b strings.Builder
	b.WriteString(conjPrefix)
	b.WriteString(table)
	b.WriteByte(':')
	for i, t := range terms {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(escapeTerm(t.col))
		b.WriteByte('=')
		b.WriteString(escapeTerm(t.val))
	}
	return b.String()
}

// ConjAllGroup returns the group that every cached read filed under a
// conjunction of table joins. Writes whose rows the plugin cannot read
// invalidate it, with TableGroup(table), so that they reach every cached
// read of the table.
func ConjAllGroup(table string) string { return conjPrefix + table + ":*" }

// escapeTerm percent-encodes the bytes that would make group names
// ambiguous ('&', '=', '%', '*') or invalid (NUL, control bytes).
func escapeTerm(s string) string {
	need := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '&' || c == '=' || c == '%' || c == '*' || c == 0x7f {
			need = true
			break
		}
	}
	if !need {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '&' || c == '=' || c == '%' || c == '*' || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// canonical returns the canonical form of a column value of the field's
// own Go type (a field's ValueOf), and whether it can make a term: ints,
// uints, strings and byte slices up to maxTermValue, bools and NULL can;
// floats, times, long values and other kinds cannot. A driver.Valuer is
// judged by the value it gives.
func canonical(v any) (string, bool) {
	for range 4 {
		if v == nil {
			return nullValue, true
		}
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && rv.IsNil() {
			return nullValue, true
		}
		if vr, ok := v.(driver.Valuer); ok {
			dv, err := safeValue(vr)
			if err != nil {
				return "", false
			}
			v = dv
			continue
		}
		if rv.Kind() != reflect.Pointer {
			break
		}
		v = rv.Elem().Interface()
	}
	if v == nil {
		return nullValue, true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(rv.Uint(), 10), true
	case reflect.Bool:
		if rv.Bool() {
			return "t", true
		}
		return "f", true
	case reflect.String:
		if s := rv.String(); len(s) <= maxTermValue {
			return s, true
		}
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 && rv.Len() <= maxTermValue/2 {
			return "x" + hex.EncodeToString(rv.Bytes()), true
		}
	}
	return "", false
}

// safeValue calls Value, turning a panic into an error.
func safeValue(v driver.Valuer) (dv driver.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the value's Value method panicked: %v", r)
		}
	}()
	return v.Value()
}

// fieldValue converts a query literal to the Go type of field, as GORM
// would write it into a row, and returns its canonical form; false when
// the conversion fails or the value can make no term.
func fieldValue(ctx context.Context, sch *schema.Schema, f *schema.Field, lit any) (s string, ok bool) {
	defer func() {
		if recover() != nil {
			s, ok = "", false
		}
	}()
	if _, isExpr := lit.(clause.Expression); isExpr {
		return "", false
	}
	if _, isDB := lit.(*gorm.DB); isDB {
		return "", false
	}
	if !termType(f) {
		return "", false
	}
	// GORM's setters parse text leniently (base 0 for ints, a bool that
	// does not parse is false); the database does not. Parse it strictly,
	// as both databases read it, or make no term.
	if b, ok := lit.([]byte); ok {
		lit = string(b)
	}
	if str, ok := lit.(string); ok {
		switch k := derefType(f.FieldType).Kind(); {
		case k >= reflect.Int && k <= reflect.Int64:
			n, err := strconv.ParseInt(str, 10, 64)
			if err != nil {
				return "", false
			}
			lit = n
		case k >= reflect.Uint && k <= reflect.Uint64:
			n, err := strconv.ParseUint(str, 10, 64)
			if err != nil {
				return "", false
			}
			lit = n
		case k == reflect.Bool:
			b, err := strconv.ParseBool(str)
			if err != nil {
				return "", false
			}
			lit = b
		}
	}
	row := reflect.New(sch.ModelType).Elem()
	if err := f.Set(ctx, row, lit); err != nil {
		return "", false
	}
	v, _ := f.ValueOf(ctx, row)
	return canonical(v)
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// kindValue returns the canonical form of a literal for a column whose
// schema is unknown (the join table of an association read from the side
// that does not declare it): integers and strings only, the kinds join
// keys have, whose canonical form does not depend on the column's Go type.
func kindValue(lit any) (string, bool) {
	if lit == nil {
		return "", false
	}
	switch reflect.ValueOf(lit).Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.String:
		return canonical(lit)
	}
	return "", false
}

// termType reports whether a column's values can make terms at all: not
// a column whose declared type compares loosely (CHAR(n) pads, citext and
// collations ignore case), nor one with a serializer.
func termType(f *schema.Field) bool {
	if f.Serializer != nil {
		return false
	}
	t := strings.ToLower(f.TagSettings["TYPE"])
	if strings.HasPrefix(t, "char") || strings.HasPrefix(t, "character(") || strings.HasPrefix(t, "bpchar") ||
		strings.Contains(t, "citext") || strings.Contains(t, "collate") || f.TagSettings["COLLATE"] != "" {
		return false
	}
	return true
}

// image is one row of a table as a write left it or found it: the
// canonical value of each column that can make a term. A column missing
// from it matches no term.
type image map[string]string

// rowImages returns the images of the rows in v (a struct or a slice of
// them) of schema sch.
func rowImages(ctx context.Context, sch *schema.Schema, v reflect.Value) []image {
	var out []image
	eachRow(v, func(row reflect.Value) {
		img := image{}
		for _, f := range sch.Fields {
			if f.DBName == "" || !termType(f) {
				continue
			}
			fv, _ := f.ValueOf(ctx, row)
			if s, ok := canonical(fv); ok {
				img[f.DBName] = s
			}
		}
		out = append(out, img)
	})
	return out
}

// key returns a string that identifies the image (for deduplication).
func (img image) key() string {
	cols := make([]string, 0, len(img))
	for c := range img {
		cols = append(cols, c)
	}
	sort.Strings(cols)
	var b strings.Builder
	for _, c := range cols {
		b.WriteString(escapeTerm(c))
		b.WriteByte('=')
		b.WriteString(escapeTerm(img[c]))
		b.WriteByte('&')
	}
	return b.String()
}

// conjGroups returns the groups of the conjunctions of table, under the
// given schemes, that the images satisfy.
func conjGroups(table string, schemes []string, images []image) []string {
	var out []string
	for _, sc := range schemes {
		cols := strings.Split(sc, ",")
	rows:
		for _, img := range images {
			terms := make([]term, len(cols))
			for i, c := range cols {
				v, ok := img[c]
				if !ok {
					continue rows
				}
				terms[i] = term{c, v}
			}
			out = append(out, conjGroupName(table, terms))
		}
	}
	return out
}

// readDeps is what one read statement depends on.
type readDeps struct {
	conjs   []conj   // conjunctions it is filed under
	tables  []string // tables it depends on whole (their TableGroup)
	unknown string   // why its dependencies cannot be named ("" if they can)
	// pkLookup: the read is of the main table alone, by one value of its
	// primary key.
	pkLookup bool
}

// groups returns the groups the read joins.
func (d readDeps) groups() []string {
	out := make([]string, 0, len(d.conjs)+len(d.tables)+1)
	seen := map[string]bool{}
	add := func(g string) {
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	for _, c := range d.conjs {
		add(c.group())
		add(ConjAllGroup(c.table))
	}
	for _, t := range d.tables {
		add(TableGroup(t))
	}
	return out
}

// schemes returns the schemes the read uses, by table.
func (d readDeps) schemes() map[string][]string {
	out := map[string][]string{}
	for _, c := range d.conjs {
		if s := c.scheme(); !slices.Contains(out[c.table], s) {
			out[c.table] = append(out[c.table], s)
		}
	}
	return out
}

// readTable is a table a read names: its real name, its schema if known,
// and whether rows of it may be absent from the result's joins (a LEFT or
// RIGHT join), where IS NULL terms mean the absence of a row.
type readTable struct {
	name   string
	schema *schema.Schema
	outer  bool
	// joinOnly: joined by a non-raw join without a schema the analysis
	// could find (an association's join table seen from the side that does
	// not declare it): its terms are canonical by their kind (kindValue).
	joinOnly bool
}

// rawSelect finds raw SQL that reads tables of its own.
var (
	rawSelect    = regexp.MustCompile(`(?i)\b(select|from|join)\b`)
	rawTableRef  = regexp.MustCompile("(?i)\\b(?:from|join)\\s+([`\"]?[A-Za-z_][A-Za-z0-9_$]*[`\"]?(?:\\.[`\"]?[A-Za-z_][A-Za-z0-9_$]*[`\"]?)?)")
	rawOr        = regexp.MustCompile(`(?i)\bor\b`)
	rawAndSplit  = regexp.MustCompile(`(?i)\s+and\s+`)
	rawEqualityT = regexp.MustCompile("^\\s*(?:([`\"]?[A-Za-z_][A-Za-z0-9_]*[`\"]?)\\.)?([`\"]?[A-Za-z_][A-Za-z0-9_]*[`\"]?)\\s*(=|(?i:in))\\s*(\\(\\s*\\?\\s*\\)|\\?)\\s*$")
	rawAlias     = regexp.MustCompile("^\\s*([`\"]?[A-Za-z_][A-Za-z0-9_.]*[`\"]?)(?:\\s+(?i:as\\s+)?([`\"]?[A-Za-z_][A-Za-z0-9_]*[`\"]?))?\\s*$")
)

func unquote(s string) string { return strings.Trim(s, "`\"") }

// analyzer finds the dependencies of a built read statement.
type analyzer struct {
	ctx     context.Context
	stmt    *gorm.Statement
	main    string                // the main table's name ("" if unknown)
	quals   map[string]*readTable // qualifiers (names and aliases) to tables
	tables  map[string]*readTable // by real name
	deps    readDeps
	byCol   map[string]map[string][]string // table -> column -> candidate values (OR within a column)
	only    *readTable                     // when set, terms on other tables are ignored (onTerms)
	dropped bool                           // a term of the main table was dropped
}

// analyzeRead returns what a read statement depends on. It must run after
// the statement is built (callbacks.BuildQuerySQL); raw says whether its
// SQL came from db.Raw, whose tables are unknown.
func analyzeRead(stmt *gorm.Statement, raw bool) readDeps {
	a := &analyzer{ctx: stmt.Context, stmt: stmt, quals: map[string]*readTable{}, tables: map[string]*readTable{},
		byCol: map[string]map[string][]string{}}
	if raw {
		a.deps.unknown = "raw SQL (db.Raw)"
		return a.deps
	}
	a.mainTable()
	if a.deps.unknown != "" {
		return a.deps
	}
	a.fromClause()
	a.rawFragments()
	if a.deps.unknown != "" {
		return a.deps
	}
	a.where()
	if a.deps.unknown != "" {
		return a.deps
	}
	a.finish()
	return a.deps
}

// addTable records a table the read names, under its qualifiers.
func (a *analyzer) addTable(name string, sch *schema.Schema, outer bool, quals ...string) *readTable {
	name = unquote(name)
	t := a.tables[name]
	if t == nil {
		t = &readTable{name: name, schema: sch}
		a.tables[name] = t
	}
	if sch != nil && t.schema == nil {
		t.schema = sch
	}
	t.outer = t.outer || outer
	for _, q := range append(quals, name) {
		if q = unquote(q); q != "" {
			a.quals[q] = t
		}
	}
	return t
}

// mainTable resolves the statement's own table and its alias.
func (a *analyzer) mainTable() {
	st := a.stmt
	if e := st.TableExpr; e != nil {
		if len(e.Vars) > 0 || rawSelect.MatchString(e.SQL) {
			a.subqueries(e.Vars)
			if !a.rawTables(e.SQL) && a.deps.unknown == "" {
				a.deps.unknown = "a table expression " + strconv.Quote(e.SQL)
			}
			return
		}
		m := rawAlias.FindStringSubmatch(e.SQL)
		if m == nil {
			a.deps.unknown = "a table expression " + strconv.Quote(e.SQL)
			return
		}
		name := unquote(m[1])
		a.main = name
		a.addTable(name, a.schemaOf(name), false, m[2], clause.CurrentTable)
		return
	}
	name := st.Table
	if name == "" && st.Schema != nil {
		name = st.Schema.Table
	}
	if name == "" {
		a.deps.unknown = "no table"
		return
	}
	a.main = name
	a.addTable(name, a.schemaOf(name), false, clause.CurrentTable)
}

// schemaOf returns the schema of a table the statement's model reaches:
// its own, those of its relations and their join tables (to any depth).
func (a *analyzer) schemaOf(table string) *schema.Schema {
	root := a.stmt.Schema
	if root == nil {
		return nil
	}
	if root.Table == table || a.stmt.Table == table && table != "" {
		return root
	}
	seen := map[*schema.Schema]bool{}
	var walk func(s *schema.Schema, depth int) *schema.Schema
	walk = func(s *schema.Schema, depth int) *schema.Schema {
		if s == nil || seen[s] || depth > 4 {
			return nil
		}
		seen[s] = true
		if s.Table == table {
			return s
		}
		for _, rel := range s.Relationships.Relations {
			if rel.JoinTable != nil && rel.JoinTable.Table == table {
				return rel.JoinTable
			}
			if found := walk(rel.FieldSchema, depth+1); found != nil {
				return found
			}
		}
		return nil
	}
	return walk(root, 0)
}

// fromClause records the tables of the FROM clause and its joins.
func (a *analyzer) fromClause() {
	c, ok := a.stmt.Clauses["FROM"]
	if !ok {
		return
	}
	from, ok := c.Expression.(clause.From)
	if !ok {
		if c.Expression != nil {
			a.deps.unknown = fmt.Sprintf("a FROM clause of type %T", c.Expression)
		}
		return
	}
	for _, t := range from.Tables {
		if t.Raw {
			if !a.rawTables(t.Name) {
				a.deps.unknown = "a raw FROM table " + strconv.Quote(t.Name)
				return
			}
			continue
		}
		if t.Name == clause.CurrentTable || t.Name == "" {
			continue
		}
		a.addTable(t.Name, a.schemaOf(t.Name), false, t.Alias)
	}
	for _, j := range from.Joins {
		if j.Expression != nil {
			sql, vars := exprSQL(j.Expression)
			a.subqueries(vars)
			if !a.rawTables(sql) {
				a.deps.unknown = "a join " + strconv.Quote(sql)
				return
			}
			continue
		}
		outer := j.Type == clause.LeftJoin || j.Type == clause.RightJoin
		if j.Table.Raw {
			if !a.rawTables(j.Table.Name) {
				a.deps.unknown = "a raw join table " + strconv.Quote(j.Table.Name)
				return
			}
			continue
		}
		jt := a.addTable(j.Table.Name, a.schemaOf(j.Table.Name), outer, j.Table.Alias)
		jt.joinOnly = jt.schema == nil
		for _, e := range j.ON.Exprs {
			a.scanExpr(e)
		}
		a.onTerms(jt, j.ON.Exprs)
	}
}

// onTerms records the equality terms of a join's ON conditions on the
// joined table itself: whatever the join's type, only rows of it that
// satisfy them take part in the result (Association("Tags").Find selects
// the join rows of one owner there). Terms on other tables are ignored:
// in an outer join they do not filter those tables' rows.
func (a *analyzer) onTerms(jt *readTable, exprs []clause.Expression) {
	exprs = flattenAnd(exprs)
	for _, e := range exprs {
		if or, ok := e.(clause.OrConditions); ok && len(or.Exprs) == 1 {
			return
		}
		if sql, _ := exprSQL(e); sql != "" && rawOr.MatchString(sql) && !wrapped(sql, len(exprs)) {
			return
		}
	}
	a.only = jt
	defer func() { a.only = nil }()
	for _, e := range exprs {
		a.term(e)
	}
}

// rawFragments looks at every other clause (SELECT, GROUP BY, HAVING,
// ORDER BY, ...) for sub-queries and raw SQL that reads tables.
func (a *analyzer) rawFragments() {
	for name, c := range a.stmt.Clauses {
		switch name {
		case "WHERE", "FROM":
			continue
		}
		a.scanExpr(c.Expression)
		if a.deps.unknown != "" {
			return
		}
	}
	for _, s := range a.stmt.Selects {
		if rawSelect.MatchString(s) && !a.rawTables(s) {
			a.deps.unknown = "a select " + strconv.Quote(s)
			return
		}
	}
}

// scanExpr finds the tables that an expression reads by itself: its
// sub-queries and the tables its raw SQL names after FROM or JOIN.
func (a *analyzer) scanExpr(e clause.Expression) {
	switch v := e.(type) {
	case nil:
	case clause.Where:
		for _, x := range v.Exprs {
			a.scanExpr(x)
		}
	case clause.AndConditions:
		for _, x := range v.Exprs {
			a.scanExpr(x)
		}
	case clause.OrConditions:
		for _, x := range v.Exprs {
			a.scanExpr(x)
		}
	case clause.NotConditions:
		for _, x := range v.Exprs {
			a.scanExpr(x)
		}
	case clause.Expr, clause.NamedExpr:
		sql, vars := exprSQL(v)
		a.subqueries(vars)
		if rawSelect.MatchString(sql) && !a.rawTables(sql) && a.deps.unknown == "" {
			a.deps.unknown = "raw SQL " + strconv.Quote(sql)
		}
	case clause.Eq:
		a.subqueries([]any{v.Value})
	case clause.Neq:
		a.subqueries([]any{v.Value})
	case clause.Gt:
		a.subqueries([]any{v.Value})
	case clause.Gte:
		a.subqueries([]any{v.Value})
	case clause.Lt:
		a.subqueries([]any{v.Value})
	case clause.Lte:
		a.subqueries([]any{v.Value})
	case clause.Like:
		a.subqueries([]any{v.Value})
	case clause.IN:
		a.subqueries(v.Values)
	case clause.Select:
		a.scanExpr(v.Expression)
	case clause.GroupBy:
		for _, x := range v.Having {
			a.scanExpr(x)
		}
	case clause.OrderBy:
		a.scanExpr(v.Expression)
	case clause.Limit, clause.Locking, clause.Returning:
	case clause.Expression:
		// Another expression type: its SQL is unknown.
		if _, ok := v.(clause.Interface); !ok {
			a.deps.unknown = fmt.Sprintf("an expression of type %T", v)
		}
	}
}

func exprSQL(e clause.Expression) (string, []any) {
	switch v := e.(type) {
	case clause.Expr:
		return v.SQL, v.Vars
	case clause.NamedExpr:
		return v.SQL, v.Vars
	}
	return "", nil
}

// subqueries records the tables of the sub-queries among vars, at any
// depth of slices: each as a whole table (TableGroup).
func (a *analyzer) subqueries(vars []any) {
	for _, v := range vars {
		switch x := v.(type) {
		case *gorm.DB:
			a.subquery(x)
		case clause.Expression:
			a.scanExpr(x)
		case []any:
			a.subqueries(x)
		}
	}
}

func (a *analyzer) subquery(sub *gorm.DB) {
	if sub == nil || sub.Statement == nil {
		return
	}
	st := sub.Statement
	if st.SQL.Len() > 0 {
		if !a.rawTables(st.SQL.String()) {
			a.deps.unknown = "a raw sub-query"
		}
		return
	}
	name := st.Table
	if name == "" && st.Model != nil {
		s := &gorm.Statement{DB: sub}
		if err := s.Parse(st.Model); err == nil {
			name = s.Schema.Table
		}
	}
	if st.TableExpr != nil {
		a.subqueries(st.TableExpr.Vars)
		if !a.rawTables(st.TableExpr.SQL) {
			a.deps.unknown = "a sub-query table expression"
			return
		}
	} else if name == "" {
		a.deps.unknown = "a sub-query on an unknown table"
		return
	}
	if name != "" {
		a.deps.tables = append(a.deps.tables, name)
	}
	for _, j := range st.Joins {
		if rel, ok := subRelation(sub, j.Name); ok {
			a.deps.tables = append(a.deps.tables, rel)
			continue
		}
		a.subqueries(j.Conds)
		if !a.rawTables(j.Name) {
			a.deps.unknown = "a sub-query join " + strconv.Quote(j.Name)
			return
		}
	}
	for _, c := range st.Clauses {
		a.scanExpr(c.Expression)
	}
}

// subRelation returns the table of a relation join of a sub-query.
func subRelation(sub *gorm.DB, name string) (string, bool) {
	st := sub.Statement
	s := st.Schema
	if s == nil && st.Model != nil {
		ps := &gorm.Statement{DB: sub}
		if ps.Parse(st.Model) == nil {
			s = ps.Schema
		}
	}
	if s == nil {
		return "", false
	}
	if rel, ok := s.Relationships.Relations[name]; ok && rel.FieldSchema != nil {
		return rel.FieldSchema.Table, true
	}
	return "", false
}

// rawTables records as whole tables those that raw SQL names after FROM
// or JOIN. It reports false when SQL that reads tables (it has SELECT,
// FROM or JOIN) names none the pattern can find.
func (a *analyzer) rawTables(sql string) bool {
	if !rawSelect.MatchString(sql) {
		return true // an expression or a table name: no table of its own
	}
	found := rawTableRef.FindAllStringSubmatch(sql, -1)
	if len(found) == 0 {
		return false
	}
	for _, m := range found {
		name := m[1]
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			name = name[i+1:]
		}
		name = unquote(name)
		if strings.EqualFold(name, "select") || strings.EqualFold(name, "lateral") {
			return false
		}
		a.deps.tables = append(a.deps.tables, name)
	}
	return true
}

// where collects the equality terms of the top-level AND of the WHERE
// clause, by table; a top-level OR makes every table a whole table.
func (a *analyzer) where() {
	c, ok := a.stmt.Clauses["WHERE"]
	if !ok {
		return
	}
	w, ok := c.Expression.(clause.Where)
	if !ok {
		if c.Expression != nil {
			a.deps.unknown = fmt.Sprintf("a WHERE clause of type %T", c.Expression)
		}
		return
	}
	exprs := flattenAnd(w.Exprs)
	for _, e := range exprs {
		a.scanExpr(e)
		if or, ok := e.(clause.OrConditions); ok && len(or.Exprs) == 1 {
			a.byCol = nil // a top-level OR: no conjunction at all
		}
		if sql, _ := exprSQL(e); sql != "" && rawOr.MatchString(sql) && !wrapped(sql, len(exprs)) {
			a.byCol = nil // an OR GORM does not wrap in parentheses
		}
	}
	if a.deps.unknown != "" || a.byCol == nil {
		a.byCol = nil
		a.dropped = true
		return
	}
	for _, e := range exprs {
		a.term(e)
	}
}

// wrapped reports whether GORM wraps a raw WHERE fragment in parentheses
// (buildExprs): only next to other conditions, and only when it holds " AND
// " or " OR " with single spaces.
func wrapped(sql string, siblings int) bool {
	up := strings.ToUpper(sql)
	return siblings > 1 && (strings.Contains(up, " AND ") || strings.Contains(up, " OR "))
}

// flattenAnd returns the top-level AND terms of exprs. A nested group
// that holds a positional OR (Where(db.Where(a).Or(b))) is one term: GORM
// builds it as "(a OR b)".
func flattenAnd(exprs []clause.Expression) []clause.Expression {
	var out []clause.Expression
	for _, e := range exprs {
		if and, ok := e.(clause.AndConditions); ok && !hasPositionalOr(and.Exprs) {
			out = append(out, flattenAnd(and.Exprs)...)
			continue
		}
		out = append(out, e)
	}
	return out
}

// hasPositionalOr reports whether exprs, built as one list, hold an OR
// between them (a single-condition OrConditions, as db.Or adds).
func hasPositionalOr(exprs []clause.Expression) bool {
	for _, e := range exprs {
		if or, ok := e.(clause.OrConditions); ok && len(or.Exprs) == 1 {
			return true
		}
	}
	return false
}

// term records one top-level AND term, if it is an equality (or an IN)
// on a column of a known table.
func (a *analyzer) term(e clause.Expression) {
	switch v := e.(type) {
	case clause.Eq:
		col, ok := columnOf(v.Column)
		switch {
		case !ok:
			a.drop(nil)
		case v.Value == nil:
			a.add(col, []any{nil}, true)
		case isList(v.Value):
			a.add(col, sliceValues(reflect.ValueOf(v.Value)), false)
		default:
			a.add(col, []any{v.Value}, false)
		}
	case clause.IN:
		col, ok := columnOf(v.Column)
		switch {
		case !ok:
			a.drop(nil)
		case len(v.Values) == 1 && isList(v.Values[0]):
			a.add(col, sliceValues(reflect.ValueOf(v.Values[0])), false)
		default:
			a.add(col, v.Values, false)
		}
	case clause.Expr:
		a.exprTerms(v)
	default:
		a.drop(nil)
	}
}

// columnOf returns the column of an Eq or IN: a clause.Column, or a
// string ("name" or "table.name", as map conditions give it).
func columnOf(c any) (clause.Column, bool) {
	switch v := c.(type) {
	case clause.Column:
		return v, !v.Raw
	case string:
		if t, n, ok := strings.Cut(v, "."); ok {
			return clause.Column{Table: unquote(t), Name: unquote(n)}, true
		}
		return clause.Column{Name: unquote(v)}, v != ""
	}
	return clause.Column{}, false
}

// isList reports whether v is a list of values (not bytes, not a Valuer),
// which GORM writes as "(v1,v2)".
func isList(v any) bool {
	if v == nil {
		return false
	}
	if _, ok := v.(driver.Valuer); ok {
		return false
	}
	rv := reflect.ValueOf(v)
	return (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array) && rv.Type().Elem().Kind() != reflect.Uint8
}

// exprTerms reads "col = ?", "t.col = ?", "col IN ?" and "col IN (?)",
// joined by AND, from a raw condition; anything else is dropped.
func (a *analyzer) exprTerms(e clause.Expr) {
	sql := e.SQL
	if strings.ContainsAny(sql, "'@$") || strings.Count(sql, "?") != len(e.Vars) ||
		strings.ContainsAny(strings.NewReplacer("(?)", "", "( ? )", "").Replace(sql), "()") {
		a.drop(nil)
		return
	}
	parts := rawAndSplit.Split(sql, -1)
	vi := 0
	for _, part := range parts {
		n := strings.Count(part, "?")
		m := rawEqualityT.FindStringSubmatch(part)
		if m == nil || n != 1 {
			vi += n
			a.drop(nil)
			continue
		}
		col := clause.Column{Table: unquote(m[1]), Name: unquote(m[2])}
		v := e.Vars[vi]
		vi++
		in := strings.EqualFold(m[3], "in")
		switch list := isList(v); {
		case in && list:
			a.add(col, sliceValues(reflect.ValueOf(v)), false)
		case !in && !list && v != nil:
			a.add(col, []any{v}, false)
		default: // "col = NULL", "col = (1,2)", "col IN 5"
			a.drop(&col)
		}
	}
}

func sliceValues(rv reflect.Value) []any {
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out
}

// drop records that a term was dropped; col, if known, names its column.
func (a *analyzer) drop(col *clause.Column) {
	if a.only != nil {
		return // an ON term: the main table's terms are not concerned
	}
	if col == nil {
		a.dropped = true
		return
	}
	if t := a.qualify(*col); t == nil || t.name == a.main {
		a.dropped = true
	}
}

// qualify returns the table a column belongs to.
func (a *analyzer) qualify(col clause.Column) *readTable {
	if col.Table == "" {
		return a.tables[a.main]
	}
	return a.quals[unquote(col.Table)]
}

// add records the term "col IN values" (one value: an equality); isNull
// says the one value is SQL NULL.
func (a *analyzer) add(col clause.Column, values []any, isNull bool) {
	t := a.qualify(col)
	if a.only != nil && t != a.only {
		return
	}
	if t == nil || col.Raw || t.schema == nil && (col.Name == clause.PrimaryKey || !t.joinOnly) {
		a.drop(&col)
		return
	}
	var f *schema.Field
	colName := col.Name
	if t.schema != nil {
		if col.Name == clause.PrimaryKey {
			f = t.schema.PrioritizedPrimaryField
		} else {
			f = t.schema.LookUpField(col.Name)
		}
		if f == nil || f.DBName == "" {
			a.drop(&col)
			return
		}
		colName = f.DBName
	}
	if len(values) == 0 || len(values) > maxConjs {
		a.drop(&col)
		return
	}
	if isNull && t.outer && a.only == nil {
		// IS NULL on an outer-joined table matches rows of the main table
		// that have no row there: it names no rows of it.
		a.drop(&col)
		return
	}
	vals := make([]string, 0, len(values))
	for _, v := range values {
		if isNull {
			vals = append(vals, nullValue)
			continue
		}
		if v == nil {
			continue // "IN (NULL)" matches nothing
		}
		var s string
		var ok bool
		if f != nil {
			s, ok = fieldValue(a.ctx, t.schema, f, v)
		} else {
			s, ok = kindValue(v)
		}
		if !ok {
			a.drop(&col)
			return
		}
		vals = append(vals, s)
	}
	if len(vals) == 0 {
		a.drop(&col)
		return
	}
	cols := a.byCol[t.name]
	if cols == nil {
		cols = map[string][]string{}
		a.byCol[t.name] = cols
	}
	if prev, ok := cols[colName]; ok {
		// Two terms on one column: rows satisfy both, so keep the values
		// they share.
		vals = slices.DeleteFunc(vals, func(v string) bool { return !slices.Contains(prev, v) })
	}
	slices.Sort(vals)
	cols[colName] = slices.Compact(vals)
}

// finish turns the terms into conjunctions: a table with terms is filed
// under the product of its columns' values (up to maxConjs; past that,
// the columns with the most values are dropped), a table without under
// its whole table.
func (a *analyzer) finish() {
	names := make([]string, 0, len(a.tables))
	for n := range a.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		cols := a.byCol[name]
		var colNames []string
		for c := range cols {
			colNames = append(colNames, c)
		}
		sort.Slice(colNames, func(i, j int) bool {
			if li, lj := len(cols[colNames[i]]), len(cols[colNames[j]]); li != lj {
				return li < lj
			}
			return colNames[i] < colNames[j]
		})
		n := 1
		keep := colNames[:0]
		for _, c := range colNames {
			if k := len(cols[c]); k == 0 {
				// Contradictory terms (a = 1 AND a = 2): no row matches,
				// whatever the table holds.
				keep = nil
				n = 0
				break
			} else if n*k <= maxConjs {
				n *= k
				keep = append(keep, c)
			} else if name == a.main {
				a.dropped = true
			}
		}
		if n == 0 {
			continue
		}
		if len(keep) == 0 {
			a.deps.tables = append(a.deps.tables, name)
			continue
		}
		sort.Strings(keep)
		combos := [][]term{nil}
		for _, c := range keep {
			var next [][]term
			for _, prefix := range combos {
				for _, v := range cols[c] {
					next = append(next, append(slices.Clip(prefix), term{c, v}))
				}
			}
			combos = next
		}
		for _, terms := range combos {
			a.deps.conjs = append(a.deps.conjs, conj{table: name, terms: terms})
		}
	}
	slices.Sort(a.deps.tables)
	a.deps.tables = slices.Compact(a.deps.tables)
	// A primary-key lookup: one table, one conjunction, on its primary key
	// alone, nothing dropped.
	if mt := a.tables[a.main]; len(a.tables) == 1 && !a.dropped && len(a.deps.tables) == 0 && len(a.deps.conjs) == 1 &&
		mt.schema != nil && len(mt.schema.PrimaryFieldDBNames) == 1 {
		c := a.deps.conjs[0]
		a.deps.pkLookup = len(c.terms) == 1 && c.terms[0].col == mt.schema.PrimaryFieldDBNames[0]
	}
}
