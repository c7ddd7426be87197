package cacheme

import (
	"context"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"
	gormcb "gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"
)

// The query cache: GORM reads cached without a function to write.
//
// A read is cached when it carries the Cached clause
// (db.Clauses(cacheme.Cached{TTL: time.Minute}).First(&u, 5)), or when its
// model is registered with CacheQueries; the NoCache clause opts a read
// out. It covers every read GORM makes through its query and row
// callbacks: First, Take, Last, Find (into structs, slices and maps),
// Count, Pluck, Scan, Row, Rows, Preload (each preloaded query is cached
// on its own, with the options of the statement that preloads it) and
// Joins. The key is the dialect, the final SQL with its bound variables,
// and the destination type; the value is the rows the database returned
// (rowset.go), which a hit hands to GORM as the database would, so that a
// hit runs no query. A result with no rows (ErrRecordNotFound) is cached
// too. Each cached read joins the groups of what it depends on (conj.go),
// so that a write invalidates exactly the reads it can change. Cached
// reads share the memoizer's leases, herd protection, stale serving, stats
// and tags; a read's tag is its table's name unless the options set one.
//
// A read inside a transaction is never cached nor served from the cache:
// it must see the transaction's own writes and snapshot.

// Cached is a clause that caches the result of the read it is added to:
//
//	db.Clauses(cacheme.Cached{TTL: time.Minute}).Where("author_id = ?", 5).Find(&books)
//
// The reads it preloads are cached with the same options.
type Cached struct {
	// TTL is how long the result stays valid. If zero, defaults to
	// Settings.TTL.
	TTL time.Duration
	// Tag names the set of the read's entries (InvalidateTag, stats). If
	// empty, defaults to the name of the read's table.
	Tag string
	// Stale overrides Settings.NoStale for this read.
	Stale StaleMode
	// Tables names the tables a db.Raw read depends on, each as a whole
	// (TableGroup), since raw SQL cannot be analysed. A raw read with the
	// Cached clause and no Tables fails with an error wrapping
	// ErrInvalidSpec. Ignored for other reads.
	Tables []string
}

const (
	cachedKey   = Name + ":cached"
	noCacheKey  = Name + ":nocache"
	tableInKeys = 64 // the table name is kept in a cached read's key up to this length
)

// ModifyStatement marks the statement for caching.
func (c Cached) ModifyStatement(stmt *gorm.Statement) { stmt.Settings.Store(cachedKey, c) }

// Build adds nothing to the SQL.
func (Cached) Build(clause.Builder) {}

// NoCache is a clause that keeps a read out of the query cache, whatever
// its model's registration (CacheQueries):
//
//	db.Clauses(cacheme.NoCache{}).First(&u, 5)
type NoCache struct{}

// ModifyStatement marks the statement as not cached.
func (NoCache) ModifyStatement(stmt *gorm.Statement) { stmt.Settings.Store(noCacheKey, true) }

// Build adds nothing to the SQL.
func (NoCache) Build(clause.Builder) {}

// QueryCache is the registration of a model's reads with CacheQueries, like
// a django-cacheops profile.
type QueryCache struct {
	// TTL is how long a result stays valid. If zero, defaults to
	// Settings.TTL.
	TTL time.Duration
	// PrimaryKeyOnly caches only lookups by one value of the primary key
	// (First(&u, 5), Where("id = ?", 5).Take(&u)); zero caches every read
	// of the model.
	PrimaryKeyOnly bool
	// Tag names the set of the reads' entries. If empty, defaults to the
	// name of the read's table.
	Tag string
	// Stale overrides Settings.NoStale for these reads.
	Stale StaleMode
}

// queryPolicies are the models registered with CacheQueries.
type queryPolicies struct {
	mu     sync.RWMutex
	byType map[reflect.Type]QueryCache
}

// CacheQueries caches the reads of model (a struct value or a pointer to
// one) as qc says: every read whose model is of that type, or only its
// primary-key lookups. It may be called before or after db.Use. A second
// call for the same model replaces the first. A negative TTL, an invalid
// tag or a model that is not a struct is an error wrapping ErrInvalidSpec.
func (p *Plugin) CacheQueries(model any, qc QueryCache) error {
	if err := p.Err(); err != nil {
		return err
	}
	t := reflect.TypeOf(model)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return fmt.Errorf("%w: CacheQueries: %T is not a model", ErrInvalidSpec, model)
	}
	if qc.TTL < 0 {
		return fmt.Errorf("%w: CacheQueries: negative TTL %v", ErrInvalidSpec, qc.TTL)
	}
	if qc.Tag != "" {
		if _, err := p.tagKey(qc.Tag); err != nil {
			return err
		}
	}
	p.queries.mu.Lock()
	defer p.queries.mu.Unlock()
	if p.queries.byType == nil {
		p.queries.byType = map[reflect.Type]QueryCache{}
	}
	p.queries.byType[t] = qc
	return nil
}

// cachedCtxKey carries a Cached clause to the reads its statement preloads.
type cachedCtxKey struct{}

// readPolicy is how one read is cached.
type readPolicy struct {
	opts   Cached
	pkOnly bool
	clause bool // from the statement's Cached clause
}

// policy returns how the read db is cached, if it is.
func (p *Plugin) policy(db *gorm.DB) (readPolicy, bool) {
	st := db.Statement
	if _, no := st.Settings.Load(noCacheKey); no {
		return readPolicy{}, false
	}
	if v, ok := st.Settings.Load(cachedKey); ok {
		if c, ok := v.(Cached); ok {
			return readPolicy{opts: c, clause: true}, true
		}
	}
	if c, ok := st.Context.Value(cachedCtxKey{}).(Cached); ok {
		return readPolicy{opts: c}, true
	}
	if st.Schema == nil {
		return readPolicy{}, false
	}
	p.queries.mu.RLock()
	qc, ok := p.queries.byType[st.Schema.ModelType]
	p.queries.mu.RUnlock()
	if !ok {
		return readPolicy{}, false
	}
	return readPolicy{opts: Cached{TTL: qc.TTL, Tag: qc.Tag, Stale: qc.Stale}, pkOnly: qc.PrimaryKeyOnly}, true
}

// inTransaction reports whether a statement runs inside a transaction.
func inTransaction(cp gorm.ConnPool) bool {
	if txOf(cp) != nil {
		return true
	}
	switch cp.(type) {
	case *gorm.PreparedStmtTX, gorm.TxCommitter:
		return true
	}
	return false
}

// queryCallback replaces GORM's "gorm:query" callback, rowCallback its
// "gorm:row": each runs GORM's own for a read neither cached nor captured.
func (p *Plugin) queryCallback(db *gorm.DB) { p.readCallback(db, gormcb.Query) }
func (p *Plugin) rowCallback(db *gorm.DB)   { p.readCallback(db, gormcb.RowQuery) }

// readCallback captures the read for an enclosing memoized computation
// (capture.go) and serves it from the query cache when it is cached.
// gormRead is GORM's own callback, which it calls to read the database or, on a
// cached read, to scan the cached rows.
func (p *Plugin) readCallback(db *gorm.DB, gormRead func(*gorm.DB)) {
	st := db.Statement
	if db.Error != nil || db.DryRun || p.set.Disabled || p.err != nil {
		gormRead(db)
		return
	}
	rec := recorderFrom(st.Context)
	pol, cached := p.policy(db)
	if rec == nil && !cached {
		gormRead(db)
		return
	}
	raw := st.SQL.Len() > 0
	gormcb.BuildQuerySQL(db)
	if db.Error != nil {
		return
	}
	ctx := st.Context
	deps := analyzeRead(st, raw)
	inTx := inTransaction(st.ConnPool)
	if rec != nil {
		p.captureRead(ctx, rec, db, deps, inTx)
	}
	if cached && raw && pol.clause {
		if len(pol.opts.Tables) == 0 {
			db.AddError(fmt.Errorf("%w: a db.Raw read with the Cached clause must name its Tables", ErrInvalidSpec))
			return
		}
		deps = readDeps{tables: pol.opts.Tables}
	}
	_, locking := st.Clauses["FOR"]
	switch {
	case !cached, inTx, locking, deps.unknown != "", pol.pkOnly && !deps.pkLookup:
		gormRead(db)
		if rec != nil && db.Error == nil {
			p.captureRows(ctx, rec, st.Schema, st.Dest)
		}
		return
	}
	if p.closed.Load() {
		db.AddError(fmt.Errorf("%w: a cached read of %s", ErrClosed, st.Table))
		return
	}
	if pol.clause {
		// The reads this statement preloads are cached alike.
		st.Context = context.WithValue(ctx, cachedCtxKey{}, pol.opts)
	}
	if err := p.cachedRead(ctx, db, pol, deps, gormRead); err != nil {
		db.AddError(err)
		return
	}
	if rec != nil && db.Error == nil {
		p.captureRows(ctx, rec, st.Schema, st.Dest)
	}
}

// cachedRead serves the built read db from the query cache, reading the
// database on a miss; gormRead is GORM's own callback.
func (p *Plugin) cachedRead(ctx context.Context, db *gorm.DB, pol readPolicy, deps readDeps, gormRead func(*gorm.DB)) error {
	st := db.Statement
	table := st.Table
	if table == "" && st.Schema != nil {
		table = st.Schema.Table
	}
	if table == "" && len(deps.tables) > 0 {
		table = deps.tables[0]
	}
	ttl := pol.opts.TTL
	if ttl == 0 {
		ttl = p.set.TTL
	}
	tag := pol.opts.Tag
	if tag == "" {
		tag = table
	}
	if _, err := p.tagKey(tag); err != nil {
		return err
	}
	key := p.readKey(db, table, st.Dest)
	e, err := p.parseEntry(key)
	if err != nil {
		return err
	}
	if err := p.registerSchemes(ctx, deps.schemes(), ttl); err != nil {
		// Its conjunctions might be missed by a write: read uncached.
		p.report(ctx, err)
		p.reg.add(nil, redisErrors, 1)
		gormRead(db)
		return nil
	}
	groups := deps.groups()
	conn := st.ConnPool
	sql, vars := st.SQL.String(), st.Vars
	l := load[struct{}, *rowSet]{
		e: e, key: key, tag: tag, tagC: p.reg.registerKind(tag, KindTable), stale: pol.opts.Stale.resolve(p), ttl: ttl, codec: rowsCodec{},
		groups: func(struct{}, *rowSet) ([]string, error) { return groups, nil },
		fn: func(ctx context.Context, _ struct{}) (*rowSet, error) {
			rows, err := conn.QueryContext(ctx, sql, vars...)
			if err != nil {
				return nil, err
			}
			return readRowSet(rows)
		},
	}
	rs, err := run(withoutRecorder(ctx), p, l)
	if err != nil {
		return err
	}
	return p.replayRows(db, rs, gormRead)
}

// replayRows hands rs to GORM's own callback gormRead, as the database's rows.
func (p *Plugin) replayRows(db *gorm.DB, rs *rowSet, gormRead func(*gorm.DB)) error {
	rdb := p.replayDB()
	if rdb == nil {
		return fmt.Errorf("%w: a cached read of %s", ErrClosed, db.Statement.Table)
	}
	st := db.Statement
	conn := st.ConnPool
	st.ConnPool = replayPool{db: rdb, rs: rs}
	defer func() { st.ConnPool = conn }()
	gormRead(db)
	return nil
}

// readKey returns the cache key of the built read db: "q:<table>:<hash of
// the dialect, the SQL, its variables and the destination type>".
func (p *Plugin) readKey(db *gorm.DB, table string, dest any) string {
	h := sha256.New()
	st := db.Statement
	writeField(h, db.Dialector.Name())
	writeField(h, st.SQL.String())
	for _, v := range st.Vars {
		hashVar(h, v, 0)
	}
	writeField(h, fmt.Sprintf("%T", dest))
	if rows, ok := st.Settings.Load("rows"); ok {
		writeField(h, fmt.Sprint(rows))
	}
	sum := h.Sum(nil)
	t := strings.NewReplacer(">", "_", "\x00", "_").Replace(table)
	if len(t) > tableInKeys {
		t = t[:tableInKeys]
	}
	return "q:" + t + ":" + hex.EncodeToString(sum[:16])
}

func writeField(h hash.Hash, s string) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
	h.Write([]byte(s))
}

// hashVar writes a bound variable unambiguously: its type and value.
func hashVar(h hash.Hash, v any, depth int) {
	if depth > 8 {
		writeField(h, fmt.Sprintf("deep %T %p", v, v))
		return
	}
	switch x := v.(type) {
	case nil:
		writeField(h, "nil")
		return
	case time.Time:
		writeField(h, "time")
		writeField(h, x.Format(time.RFC3339Nano))
		writeField(h, x.Location().String())
		return
	case []byte:
		writeField(h, "bytes")
		writeField(h, string(x))
		return
	case driver.Valuer:
		writeField(h, fmt.Sprintf("valuer %T", v))
		dv, err := safeValue(x)
		if err != nil {
			writeField(h, fmt.Sprintf("error %p", v))
			return
		}
		if reflect.TypeOf(dv) == reflect.TypeOf(v) {
			writeField(h, fmt.Sprintf("%#v", dv))
			return
		}
		hashVar(h, dv, depth+1)
		return
	}
	rv := reflect.ValueOf(v)
	writeField(h, rv.Type().String())
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		writeField(h, strconv.FormatInt(rv.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		writeField(h, strconv.FormatUint(rv.Uint(), 10))
	case reflect.Float32, reflect.Float64:
		writeField(h, strconv.FormatUint(math.Float64bits(rv.Float()), 16))
	case reflect.Bool:
		writeField(h, strconv.FormatBool(rv.Bool()))
	case reflect.String:
		writeField(h, rv.String())
	case reflect.Pointer:
		if rv.IsNil() {
			writeField(h, "nil")
			return
		}
		hashVar(h, rv.Elem().Interface(), depth+1)
	case reflect.Slice, reflect.Array:
		writeField(h, strconv.Itoa(rv.Len()))
		for i := 0; i < rv.Len(); i++ {
			hashVar(h, rv.Index(i).Interface(), depth+1)
		}
	default:
		// Structs, maps and the like: their printed form (a pointer
		// inside prints its address, which only costs a miss).
		writeField(h, fmt.Sprintf("%#v", v))
	}
}
