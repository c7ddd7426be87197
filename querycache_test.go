package cacheme_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

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
}

// qcEnv is a plugin on a test Redis and a counting test database with the
// query cache's fixtures.
type qcEnv struct {
	p  *cacheme.Plugin
	db *gorm.DB
	q  *testenv.Queries
}

func newQCEnv(t *testing.T, s cacheme.Settings) qcEnv {
	t.Helper()
	p, _ := newPlugin(t, s)
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
	return qcEnv{p: p, db: db, q: q}
}

// cached returns db with the Cached clause.
func (e qcEnv) cached() *gorm.DB { return e.db.Clauses(cacheme.Cached{TTL: time.Minute}) }

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
