package cacheme_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
)

// Writer, Post and Tag are the query cache's fixtures: a post belongs to
// an author and has tags (many-to-many), and has a status to filter on.
type Writer struct {
	ID    uint
	Name  string
	Posts []Post
}

type Post struct {
	ID       uint
	Title    string
	Status   string
	WriterID uint
	Writer   Writer
	Views    int
	Tags     []Tag `gorm:"many2many:post_tags"`
}

type Tag struct {
	ID    uint
	Label string
	Posts []Post `gorm:"many2many:post_tags"`
}

// qcEnv is a plugin on a test Redis and a counting test database with the
// query cache's fixtures.
type qcEnv struct {
	p  *cacheme.Plugin
	db *gorm.DB
	q  *testenv.Queries
}

func newQCEnv(t testing.TB, s cacheme.Settings) qcEnv {
	t.Helper()
	rdb, _ := testRedis(t)
	return newQCEnvOn(t, rdb, s)
}

// newQCEnvOn is newQCEnv on the Redis rdb.
func newQCEnvOn(t testing.TB, rdb redis.UniversalClient, s cacheme.Settings) qcEnv {
	t.Helper()
	p := newPluginOn(t, rdb, s)
	db, q := testenv.CountingDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&Writer{}, &Post{}, &Tag{}))
	a1, a2 := Writer{Name: "ann"}, Writer{Name: "bob"}
	ok(t, db.Create(&a1).Error)
	ok(t, db.Create(&a2).Error)
	tags := []Tag{{Label: "go"}, {Label: "db"}}
	ok(t, db.Create(&tags).Error)
	posts := []Post{
		{Title: "p1", Status: "active", WriterID: a1.ID, Views: 1, Tags: tags[:1]},
		{Title: "p2", Status: "active", WriterID: a1.ID, Views: 2, Tags: tags},
		{Title: "p3", Status: "archived", WriterID: a2.ID, Views: 3},
		{Title: "p4", Status: "active", WriterID: a2.ID, Views: 4},
	}
	ok(t, db.Create(&posts).Error)
	settle()
	return qcEnv{p: p, db: db, q: q}
}

// cached returns db with the Cached clause, as a session that can be used
// for any number of statements.
func (e qcEnv) cached() *gorm.DB {
	return e.db.Clauses(cacheme.Cached{TTL: time.Minute}).Session(&gorm.Session{})
}

// readShape is one read, run through a db (cached or not), that returns
// what the caller gets.
type readShape struct {
	name string
	read func(db *gorm.DB) (any, error)
}

var readShapes = []readShape{
	{"First by primary key", func(db *gorm.DB) (any, error) {
		var p Post
		err := db.First(&p, 2).Error
		return p, err
	}},
	{"First not found", func(db *gorm.DB) (any, error) {
		var p Post
		err := db.First(&p, 999).Error
		return p, err
	}},
	{"Take with a struct condition", func(db *gorm.DB) (any, error) {
		var p Post
		err := db.Where(&Post{Title: "p3"}).Take(&p).Error
		return p, err
	}},
	{"Last", func(db *gorm.DB) (any, error) {
		var p Post
		err := db.Where("status = ?", "active").Last(&p).Error
		return p, err
	}},
	{"Find into a slice", func(db *gorm.DB) (any, error) {
		var ps []Post
		err := db.Where("status = ? AND writer_id = ?", "active", 1).Order("id").Find(&ps).Error
		return ps, err
	}},
	{"Find into maps", func(db *gorm.DB) (any, error) {
		var ms []map[string]any
		err := db.Model(&Post{}).Where("writer_id IN ?", []uint{1, 2}).Order("id").Find(&ms).Error
		return ms, err
	}},
	{"Find into a map", func(db *gorm.DB) (any, error) {
		m := map[string]any{}
		err := db.Model(&Post{}).Where("id = ?", 3).Find(&m).Error
		return m, err
	}},
	{"Count", func(db *gorm.DB) (any, error) {
		var n int64
		err := db.Model(&Post{}).Where("status = ?", "active").Count(&n).Error
		return n, err
	}},
	{"Pluck", func(db *gorm.DB) (any, error) {
		var titles []string
		err := db.Model(&Post{}).Where("writer_id = ?", 2).Order("title").Pluck("title", &titles).Error
		return titles, err
	}},
	{"Scan into a struct", func(db *gorm.DB) (any, error) {
		var r struct {
			Title string
			Views int
		}
		err := db.Model(&Post{}).Select("title, views").Where("id = ?", 4).Scan(&r).Error
		return r, err
	}},
	{"Scan an aggregate", func(db *gorm.DB) (any, error) {
		var rs []struct {
			WriterID uint
			Total    int
		}
		err := db.Model(&Post{}).Select("writer_id, sum(views) AS total").Group("writer_id").Order("writer_id").Scan(&rs).Error
		return rs, err
	}},
	{"Preload", func(db *gorm.DB) (any, error) {
		var as []Writer
		err := db.Preload("Posts", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).Order("id").Find(&as).Error
		return as, err
	}},
	{"Preload many-to-many", func(db *gorm.DB) (any, error) {
		var ps []Post
		err := db.Preload("Tags").Where("id IN ?", []uint{1, 2}).Order("id").Find(&ps).Error
		return ps, err
	}},
	{"Joins", func(db *gorm.DB) (any, error) {
		var ps []Post
		err := db.Joins("Writer").Where("status = ?", "active").Order("posts.id").Find(&ps).Error
		return ps, err
	}},
	{"Rows", func(db *gorm.DB) (any, error) {
		rows, err := db.Model(&Post{}).Select("id, title").Where("writer_id = ?", 1).Order("id").Rows()
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var id int
			var title string
			if err := rows.Scan(&id, &title); err != nil {
				return nil, err
			}
			out = append(out, title)
		}
		return out, rows.Err()
	}},
}

// Every read shape: the first cached read queries the database and
// returns what an uncached read returns; the second returns the same
// without any statement reaching the database.
func TestQueryCacheReadShapes(t *testing.T) {
	for _, rs := range readShapes {
		t.Run(rs.name, func(t *testing.T) {
			e := newQCEnv(t, cacheme.Settings{})
			want, wantErr := rs.read(e.db)
			before := e.q.Load()
			got, err := rs.read(e.cached())
			if !errors.Is(err, wantErr) && (err == nil || wantErr == nil || err.Error() != wantErr.Error()) {
				t.Fatalf("miss: error %v; want %v", err, wantErr)
			}
			deepEquals(t, got, want)
			if e.q.Load() == before {
				t.Fatalf("the first cached read did not reach the database")
			}
			before = e.q.Load()
			got, err = rs.read(e.cached())
			if !errors.Is(err, wantErr) && (err == nil || wantErr == nil || err.Error() != wantErr.Error()) {
				t.Fatalf("hit: error %v; want %v", err, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("hit: got %#v; want %#v", got, want)
			}
			equals(t, e.q.Load()-before, int64(0))
		})
	}
}

// served runs read through the query cache and reports whether it was
// served without reaching the database; it fails the test unless it
// returned what an uncached read returns now (never a stale value).
func (e qcEnv) served(t *testing.T, read func(db *gorm.DB) (any, error)) bool {
	t.Helper()
	before := e.q.Load()
	got, err := read(e.cached())
	hit := e.q.Load() == before
	want, wantErr := read(e.db.Clauses(cacheme.NoCache{}))
	if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("cached read: error %v; uncached: %v", err, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("cached read (hit %v) returned %#v; the database holds %#v", hit, got, want)
	}
	return hit
}

// warm reads each read once through the cache and checks that the next
// read hits.
func (e qcEnv) warm(t *testing.T, reads map[string]func(db *gorm.DB) (any, error)) {
	t.Helper()
	for name, r := range reads {
		e.served(t, r)
		if !e.served(t, r) {
			t.Fatalf("%s: not cached after a read", name)
		}
	}
}

func postByID(id uint) func(db *gorm.DB) (any, error) {
	return func(db *gorm.DB) (any, error) {
		var p Post
		err := db.First(&p, id).Error
		return p, err
	}
}

func postsWhere(query string, args ...any) func(db *gorm.DB) (any, error) {
	return func(db *gorm.DB) (any, error) {
		var ps []Post
		err := db.Where(query, args...).Order("id").Find(&ps).Error
		return ps, err
	}
}

// Precision, as cacheops tests it: a write invalidates the cached reads
// whose conjunctions its rows satisfy before or after it, and the reads
// that depend on the whole table; no other.
func TestQueryCachePrecision(t *testing.T) {
	reads := map[string]func(db *gorm.DB) (any, error){
		"post 1":          postByID(1),
		"post 2":          postByID(2),
		"post 3":          postByID(3),
		"active":          postsWhere("status = ?", "active"),
		"archived":        postsWhere("status = ?", "archived"),
		"draft":           postsWhere("status = ?", "draft"),
		"writer 1":        postsWhere("writer_id = ?", 1),
		"writer 2":        postsWhere("writer_id = ?", 2),
		"writer 1 active": postsWhere("writer_id = ? AND status = ?", 1, "active"),
		"writers 1 or 2":  postsWhere("writer_id IN ?", []uint{1, 2}),
		"popular":         postsWhere("views > ?", 2), // not a conjunction: the whole table
		"ann's writer": func(db *gorm.DB) (any, error) {
			var w Writer
			err := db.Where("name = ?", "ann").First(&w).Error
			return w, err
		},
	}
	tests := []struct {
		name   string
		write  func(db *gorm.DB) error
		missed []string // the reads that must recompute; all others hit
	}{
		{"update post 1's title (active, writer 1)", func(db *gorm.DB) error {
			return db.Model(&Post{ID: 1}).Update("title", "p1b").Error
		}, []string{"post 1", "active", "writer 1", "writer 1 active", "writers 1 or 2", "popular"}},
		{"move post 1 from active to draft", func(db *gorm.DB) error {
			return db.Model(&Post{ID: 1}).Update("status", "draft").Error
		}, []string{"post 1", "active", "draft", "writer 1", "writer 1 active", "writers 1 or 2", "popular"}},
		{"move post 3 from writer 2 to writer 1 (Save)", func(db *gorm.DB) error {
			var p Post
			if err := db.Clauses(cacheme.NoCache{}).First(&p, 3).Error; err != nil {
				return err
			}
			p.WriterID = 1
			return db.Save(&p).Error
		}, []string{"post 3", "archived", "writer 1", "writer 2", "writers 1 or 2", "popular"}},
		{"insert an archived post of writer 2", func(db *gorm.DB) error {
			return db.Create(&Post{Title: "p5", Status: "archived", WriterID: 2}).Error
		}, []string{"archived", "writer 2", "writers 1 or 2", "popular"}},
		{"bulk update of writer 2's posts", func(db *gorm.DB) error {
			return db.Model(&Post{}).Where("writer_id = ?", 2).Update("views", 9).Error
		}, []string{"post 3", "active", "archived", "writer 2", "writers 1 or 2", "popular"}},
		{"bulk delete of archived posts", func(db *gorm.DB) error {
			return db.Where("status = ?", "archived").Delete(&Post{}).Error
		}, []string{"post 3", "archived", "writer 2", "writers 1 or 2", "popular"}},
		{"update with an expression", func(db *gorm.DB) error {
			return db.Model(&Post{}).Where("id = ?", 2).UpdateColumn("views", gorm.Expr("views + ?", 1)).Error
		}, []string{"post 2", "active", "writer 1", "writer 1 active", "writers 1 or 2", "popular"}},
		{"rename writer 2 (another table)", func(db *gorm.DB) error {
			return db.Model(&Writer{ID: 2}).Update("name", "bo").Error
		}, nil},
		{"rename writer 1 (another table, read by name)", func(db *gorm.DB) error {
			return db.Model(&Writer{ID: 1}).Update("name", "anne").Error
		}, []string{"ann's writer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newQCEnv(t, cacheme.Settings{})
			e.warm(t, reads)
			ok(t, tt.write(e.db))
			missed := map[string]bool{}
			for _, name := range tt.missed {
				missed[name] = true
			}
			for name, r := range reads {
				if hit := e.served(t, r); hit == missed[name] {
					t.Errorf("%s: hit %v; want %v", name, hit, !missed[name])
				}
			}
		})
	}
}

func tagsOfPost(id uint) func(db *gorm.DB) (any, error) {
	return func(db *gorm.DB) (any, error) {
		var tags []Tag
		err := db.Model(&Post{ID: id}).Order("tags.id").Association("Tags").Find(&tags)
		return tags, err
	}
}

func postsOfTag(id uint) func(db *gorm.DB) (any, error) {
	return func(db *gorm.DB) (any, error) {
		var posts []Post
		err := db.Model(&Tag{ID: id}).Order("posts.id").Association("Posts").Find(&posts)
		return posts, err
	}
}

// Many-to-many writes from either side invalidate the cached association
// reads of both sides that they change, and leave the others alone.
// (Seed: post 1 has tag 1, post 2 tags 1 and 2, posts 3 and 4 none.)
func TestQueryCacheManyToMany(t *testing.T) {
	reads := map[string]func(db *gorm.DB) (any, error){
		"tags of post 1": tagsOfPost(1),
		"tags of post 2": tagsOfPost(2),
		"tags of post 3": tagsOfPost(3),
		"posts of tag 1": postsOfTag(1),
		"posts of tag 2": postsOfTag(2),
	}
	tests := []struct {
		name   string
		write  func(db *gorm.DB) error
		missed []string
		kept   []string // reads the write must leave cached
	}{
		{"append from the post side", func(db *gorm.DB) error {
			return db.Model(&Post{ID: 1}).Association("Tags").Append(&Tag{ID: 2})
		}, []string{"tags of post 1", "posts of tag 2"}, []string{"tags of post 3", "posts of tag 1"}},
		{"append from the tag side", func(db *gorm.DB) error {
			return db.Model(&Tag{ID: 2}).Association("Posts").Append(&Post{ID: 3})
		}, []string{"tags of post 3", "posts of tag 2"}, []string{"tags of post 1", "posts of tag 1"}},
		{"delete from the post side", func(db *gorm.DB) error {
			return db.Model(&Post{ID: 2}).Association("Tags").Delete(&Tag{ID: 1})
		}, []string{"tags of post 2", "posts of tag 1"}, []string{"tags of post 1", "posts of tag 2"}},
		{"delete from the tag side", func(db *gorm.DB) error {
			return db.Model(&Tag{ID: 1}).Association("Posts").Delete(&Post{ID: 1})
		}, []string{"tags of post 1", "posts of tag 1"}, []string{"tags of post 2", "posts of tag 2"}},
		{"clear from the post side", func(db *gorm.DB) error {
			return db.Model(&Post{ID: 2}).Association("Tags").Clear()
		}, []string{"tags of post 2", "posts of tag 1", "posts of tag 2"}, []string{"tags of post 1"}},
		{"clear from the tag side", func(db *gorm.DB) error {
			return db.Model(&Tag{ID: 2}).Association("Posts").Clear()
		}, []string{"tags of post 2", "posts of tag 2"}, []string{"tags of post 1", "posts of tag 1"}},
		{"replace from the post side", func(db *gorm.DB) error {
			return db.Model(&Post{ID: 1}).Association("Tags").Replace(&Tag{ID: 2})
		}, []string{"tags of post 1", "posts of tag 1", "posts of tag 2"}, []string{"tags of post 3"}},
		{"replace from the tag side", func(db *gorm.DB) error {
			return db.Model(&Tag{ID: 1}).Association("Posts").Replace(&Post{ID: 3})
		}, []string{"tags of post 1", "tags of post 2", "tags of post 3", "posts of tag 1"}, []string{"posts of tag 2"}},
		{"rename tag 2", func(db *gorm.DB) error {
			return db.Model(&Tag{ID: 2}).Update("label", "sql").Error
		}, []string{"tags of post 1", "tags of post 2", "tags of post 3"}, []string{"posts of tag 1", "posts of tag 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newQCEnv(t, cacheme.Settings{})
			e.warm(t, reads)
			ok(t, tt.write(e.db))
			for name, r := range reads {
				// served fails on a stale value; a read the write changes
				// must not be a hit.
				hit := e.served(t, r)
				if slices.Contains(tt.missed, name) && hit {
					t.Errorf("%s: a hit after the write; want it invalidated", name)
				}
				if slices.Contains(tt.kept, name) && !hit {
					t.Errorf("%s: invalidated by the write; want it kept", name)
				}
			}
		})
	}
}

// CacheQueries caches a model's reads without a clause: all of them, or
// only its primary-key lookups; NoCache opts a read out.
func TestCacheQueries(t *testing.T) {
	e := newQCEnv(t, cacheme.Settings{})
	ok(t, e.p.CacheQueries(&Post{}, cacheme.QueryCache{TTL: time.Minute, PrimaryKeyOnly: true}))
	ok(t, e.p.CacheQueries(Writer{}, cacheme.QueryCache{}))
	hits := func(read func(db *gorm.DB) error) bool {
		t.Helper()
		ok(t, read(e.db))
		before := e.q.Load()
		ok(t, read(e.db))
		return e.q.Load() == before
	}
	for _, tt := range []struct {
		name string
		read func(db *gorm.DB) error
		want bool
	}{
		{"a post by primary key", func(db *gorm.DB) error { var p Post; return db.First(&p, 2).Error }, true},
		{"a post by primary key in a condition", func(db *gorm.DB) error { var p Post; return db.Where("id = ?", 3).Take(&p).Error }, true},
		{"posts by status (not a primary-key lookup)", func(db *gorm.DB) error {
			var ps []Post
			return db.Where("status = ?", "active").Find(&ps).Error
		}, false},
		{"posts by primary key and status", func(db *gorm.DB) error {
			var ps []Post
			return db.Where("id = ? AND status = ?", 1, "active").Find(&ps).Error
		}, false},
		{"a post by primary key, NoCache", func(db *gorm.DB) error { var p Post; return db.Clauses(cacheme.NoCache{}).First(&p, 2).Error }, false},
		{"every writer", func(db *gorm.DB) error { var ws []Writer; return db.Order("id").Find(&ws).Error }, true},
		{"a writer by name", func(db *gorm.DB) error { var w Writer; return db.Where("name = ?", "bob").First(&w).Error }, true},
	} {
		if got := hits(tt.read); got != tt.want {
			t.Errorf("%s: second read served from the cache: %v; want %v", tt.name, got, tt.want)
		}
	}
	// The tag of a model's reads is its table, unless it names one.
	if _, err := e.p.InvalidateTag(bg, "writers"); err != nil {
		t.Fatalf("InvalidateTag(writers): %v", err)
	}
	for _, bad := range []any{nil, 5, (*int)(nil)} {
		isErr(t, e.p.CacheQueries(bad, cacheme.QueryCache{}), cacheme.ErrInvalidSpec)
	}
	isErr(t, e.p.CacheQueries(&Post{}, cacheme.QueryCache{TTL: -time.Second}), cacheme.ErrInvalidSpec)
}

// A raw read is cached only with the tables it names (each a whole
// table); without them the Cached clause is an error.
func TestQueryCacheRaw(t *testing.T) {
	e := newQCEnv(t, cacheme.Settings{})
	var n int
	err := e.db.Clauses(cacheme.Cached{}).Raw("SELECT count(*) FROM posts").Scan(&n).Error
	isErr(t, err, cacheme.ErrInvalidSpec)
	raw := func(db *gorm.DB) (any, error) {
		var n int
		err := db.Clauses(cacheme.Cached{Tables: []string{"posts"}}).Raw("SELECT count(*) FROM posts").Scan(&n).Error
		return n, err
	}
	before := e.q.Load()
	v, err := raw(e.db)
	ok(t, err)
	equals(t, v.(int), 4)
	_, err = raw(e.db)
	ok(t, err)
	equals(t, e.q.Load()-before, int64(1))
	ok(t, e.db.Create(&Post{Title: "p5", WriterID: 1}).Error)
	v, err = raw(e.db)
	ok(t, err)
	equals(t, v.(int), 5)
}

// Writes the plugin cannot read row by row reach every cached read of
// their table: a write without a model, and one through InvalidateModels.
// A not-found result is invalidated by a create that matches it.
func TestQueryCacheBroadWrites(t *testing.T) {
	e := newQCEnv(t, cacheme.Settings{})
	reads := map[string]func(db *gorm.DB) (any, error){
		"post 2":   postByID(2),
		"active":   postsWhere("status = ?", "active"),
		"post 99":  postByID(99),
		"writer 1": postsWhere("writer_id = ?", 1),
	}
	e.warm(t, reads)
	ok(t, e.db.Table("posts").Where("id = ?", 2).Update("title", "by table").Error)
	for name, r := range reads {
		if e.served(t, r) && name != "post 99" {
			t.Errorf("%s: hit after a write without a model", name)
		}
	}
	e.warm(t, reads)
	ok(t, e.db.Create(&Post{ID: 99, Title: "p99", Status: "draft", WriterID: 2}).Error)
	if e.served(t, postByID(99)) {
		t.Errorf("post 99: the cached not-found survived its create")
	}
	e.warm(t, reads)
	ok(t, e.db.Exec("UPDATE posts SET status = 'archived' WHERE id = 2").Error) // unseen by the plugin
	_, err := e.p.InvalidateModels(bg, &Post{ID: 2, Status: "active", WriterID: 1}, &Post{ID: 2, Status: "archived", WriterID: 1})
	ok(t, err)
	for _, name := range []string{"post 2", "active", "writer 1"} {
		if e.served(t, reads[name]) {
			t.Errorf("%s: hit after InvalidateModels of its row", name)
		}
	}
}

// Concurrent identical cached reads run the query once.
func TestQueryCacheHerd(t *testing.T) {
	e := newQCEnv(t, cacheme.Settings{})
	before := e.q.Load()
	const n = 50
	errs := make(chan error, n)
	for range n {
		go func() {
			var ps []Post
			errs <- e.cached().Where("writer_id = ?", 1).Find(&ps).Error
		}()
	}
	for range n {
		ok(t, <-errs)
	}
	if q := e.q.Load() - before; q != 1 {
		t.Fatalf("%d concurrent cached reads ran %d queries; want 1", n, q)
	}
}

// BenchmarkQueryCache compares a cached read with the same read on the
// database, for a primary-key lookup and a three-table join. Run it on the
// real servers, variants interleaved by -count:
//
//	CACHEME_TEST_REDIS=redis://127.0.0.1:6379/0 CACHEME_TEST_POSTGRES='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	  go test -run '^$' -bench BenchmarkQueryCache -count 8 .
func BenchmarkQueryCache(b *testing.B) {
	e := newQCEnv(b, cacheme.Settings{})
	reads := []struct {
		name string
		read func(db *gorm.DB) error
	}{
		{"pk", func(db *gorm.DB) error { var p Post; return db.First(&p, 2).Error }},
		{"join3", func(db *gorm.DB) error {
			var ps []Post
			return db.Joins("Writer").Joins("JOIN post_tags ON post_tags.post_id = posts.id").
				Where("post_tags.tag_id = ?", 1).Order("posts.id").Find(&ps).Error
		}},
	}
	for _, r := range reads {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			dbs := []*gorm.DB{e.db, e.cached()}
			interleaved(b, []string{"db", "cached"}, func(i int) error { return r.read(dbs[i]) })
		})
	}
}

// BenchmarkInvalidationShare reports, for a mixed workload of cached reads
// (by primary key, by status, by writer, by a range) and random writes
// (updates of one row, inserts), the share of the cached reads each write
// invalidates ("invalidated/write"), against the share a cache that drops
// the whole table on every write would (go-gorm/caches drops every entry,
// "table-level/write").
func BenchmarkInvalidationShare(b *testing.B) {
	e := newQCEnv(b, cacheme.Settings{})
	for i := 3; i <= 8; i++ {
		ok(b, e.db.Create(&Writer{Name: fmt.Sprintf("w%d", i)}).Error)
	}
	for i := range 96 {
		ok(b, e.db.Create(&Post{Title: fmt.Sprintf("t%d", i), Status: []string{"a", "b", "c", "d"}[i%4], WriterID: uint(1 + i%8), Views: i}).Error)
	}
	var reads []func(db *gorm.DB) (any, error)
	for id := uint(1); id <= 100; id++ {
		reads = append(reads, postByID(id))
	}
	for _, s := range []string{"a", "b", "c", "d"} {
		reads = append(reads, postsWhere("status = ?", s))
	}
	for w := uint(1); w <= 8; w++ {
		reads = append(reads, postsWhere("writer_id = ?", w), postsWhere("writer_id = ? AND status = ?", w, "a"))
	}
	reads = append(reads, postsWhere("views > ?", 50))
	rng := rand.New(rand.NewPCG(1, 2))
	var invalidated, writes int64
	for b.Loop() {
		for _, r := range reads {
			if _, err := r(e.cached()); err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
				b.Fatal(err)
			}
		}
		before := e.p.Stats().Total.Invalidations
		if rng.IntN(4) == 0 {
			ok(b, e.db.Create(&Post{Title: "new", Status: "b", WriterID: uint(1 + rng.IntN(8))}).Error)
		} else {
			ok(b, e.db.Model(&Post{ID: uint(1 + rng.IntN(100))}).Updates(map[string]any{
				"views": rng.IntN(100), "status": []string{"a", "b", "c", "d"}[rng.IntN(4)]}).Error)
		}
		invalidated += e.p.Stats().Total.Invalidations - before
		writes++
	}
	b.ReportMetric(float64(invalidated)/float64(writes)/float64(len(reads)), "invalidated/write")
	b.ReportMetric(1, "table-level/write")
}
