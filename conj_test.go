package cacheme

import (
	"database/sql/driver"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
)

// The models of the analysis tests.
type cjWriter struct {
	ID   uint
	Name string
}

type cjPost struct {
	ID        uint
	Title     string
	Status    string
	WriterID  uint
	Writer    cjWriter
	Draft     bool
	Score     float64
	Posted    time.Time
	Code      string `gorm:"type:char(4)"`
	DeletedAt gorm.DeletedAt
	Tags      []cjTag `gorm:"many2many:cj_post_tags"`
}

type cjTag struct {
	ID    uint
	Label string
}

// dryDB returns a SQLite database whose statements are built, never run,
// and the dependencies of the last read, analysed as the query cache does:
// once GORM built it, before its after-query callbacks (which drop the
// joins they generated).
func dryDB(t *testing.T) (*gorm.DB, func() readDeps) {
	t.Helper()
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "dry.db")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s, err := db.DB(); err == nil {
			s.Close()
		}
	})
	var last readDeps
	if err := db.Callback().Query().Before("gorm:preload").Register("test:analyze", func(tx *gorm.DB) {
		last = analyzeRead(tx.Statement, false)
	}); err != nil {
		t.Fatal(err)
	}
	return db.Session(&gorm.Session{DryRun: true}), func() readDeps { return last }
}

// TestAnalyzeRead: what a built read depends on, for each shape of
// condition GORM builds: conjunctions where the WHERE's top-level AND has
// equalities, whole tables where it has none or an OR, and no caching at
// all where a table cannot be named.
func TestAnalyzeRead(t *testing.T) {
	var ps []cjPost
	tests := []struct {
		name    string
		read    func(db *gorm.DB) *gorm.DB
		groups  []string // the read's groups, sorted
		unknown bool
		pk      bool
	}{
		{"primary key inline", func(db *gorm.DB) *gorm.DB { var p cjPost; return db.First(&p, 5) },
			[]string{"conj:cj_posts:*", "conj:cj_posts:deleted_at=%01null&id=5"}, false, false},
		{"primary key, unscoped", func(db *gorm.DB) *gorm.DB { var p cjPost; return db.Unscoped().First(&p, 5) },
			[]string{"conj:cj_posts:*", "conj:cj_posts:id=5"}, false, true},
		{"string equality", func(db *gorm.DB) *gorm.DB { return db.Unscoped().Where("status = ?", "a").Find(&ps) },
			[]string{"conj:cj_posts:*", "conj:cj_posts:status=a"}, false, false},
		{"two equalities in one string", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("status = ? AND writer_id = ?", "a", "7").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a&writer_id=7"}, false, false},
		{"qualified and quoted columns", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where(`"cj_posts"."status" = ?`, "a").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a"}, false, false},
		{"IN list", func(db *gorm.DB) *gorm.DB { return db.Unscoped().Where("writer_id IN ?", []int{2, 1}).Find(&ps) },
			[]string{"conj:cj_posts:*", "conj:cj_posts:writer_id=1", "conj:cj_posts:writer_id=2"}, false, false},
		{"map condition", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where(map[string]any{"status": "a", "draft": true}).Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:draft=t&status=a"}, false, false},
		{"bool as an integer: GORM cannot convert it, no term", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("draft = ?", 1).Find(&ps)
		}, []string{"table:cj_posts"}, false, false},
		{"bool as text that both databases read alike", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("draft = ?", "true").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:draft=t"}, false, false},
		{"bool as text only PostgreSQL reads: no term", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("draft = ?", "yes").Find(&ps)
		}, []string{"table:cj_posts"}, false, false},
		{"an integer as text is decimal", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("writer_id = ?", "010").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:writer_id=10"}, false, false},
		{"struct condition", func(db *gorm.DB) *gorm.DB { return db.Unscoped().Where(&cjPost{Status: "a", WriterID: 3}).Find(&ps) },
			[]string{"conj:cj_posts:*", "conj:cj_posts:status=a&writer_id=3"}, false, false},
		{"a range is dropped", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("status = ?", "a").Where("writer_id > ?", 3).Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a"}, false, false},
		{"floats, times and char(n) are dropped", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("score = ? AND posted = ? AND code = ? AND status = ?", 1.5, time.Unix(5, 0), "ab", "a").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a"}, false, false},
		{"only a range: the whole table", func(db *gorm.DB) *gorm.DB { return db.Unscoped().Where("writer_id > ?", 3).Find(&ps) },
			[]string{"table:cj_posts"}, false, false},
		{"a top-level OR: the whole table", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("status = ?", "a").Or("writer_id = ?", 3).Find(&ps)
		}, []string{"table:cj_posts"}, false, false},
		{"an OR in a raw fragment", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("status = ? OR draft", "a").Find(&ps)
		}, []string{"table:cj_posts"}, false, false},
		{"an OR GORM does not wrap", func(db *gorm.DB) *gorm.DB {
			return db.Where("status = ?\nOR draft", "a").Find(&ps)
		}, []string{"table:cj_posts"}, false, false},
		{"a grouped OR next to an equality", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where(db.Where("draft = ?", true).Or("score > ?", 1)).Where("status = ?", "a").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a"}, false, false},
		{"contradictory equalities", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("status = ?", "a").Where("status = ?", "b").Find(&ps)
		}, nil, false, false},
		{"the same equality twice", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("status = ?", "a").Where("status IN ?", []string{"a", "b"}).Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a"}, false, false},
		{"a relation join", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Joins("Writer").Where("cj_posts.status = ?", "a").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a", "table:cj_writers"}, false, false},
		{"a condition on the joined table", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Joins("Writer").Where("Writer.name = ?", "ann").Find(&ps)
		}, []string{"conj:cj_writers:*", "conj:cj_writers:name=ann", "table:cj_posts"}, false, false},
		{"IS NULL on an outer-joined table names no rows of it", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Joins("Writer").Where(clause.Eq{Column: clause.Column{Table: "Writer", Name: "id"}, Value: nil}).Find(&ps)
		}, []string{"table:cj_posts", "table:cj_writers"}, false, false},
		{"a raw join", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Joins("JOIN cj_writers w ON w.id = cj_posts.writer_id").Where("status = ?", "a").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a", "table:cj_writers"}, false, false},
		{"a sub-query", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("writer_id IN (?)", db.Model(&cjWriter{}).Select("id").Where("name = ?", "ann")).Find(&ps)
		}, []string{"table:cj_posts", "table:cj_writers"}, false, false},
		{"a raw EXISTS", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("status = ?", "a").Where("EXISTS (SELECT 1 FROM cj_writers WHERE cj_writers.id = writer_id)").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a", "table:cj_writers"}, false, false},
		{"a raw fragment with parentheses is dropped whole", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Where("status = ? AND (draft OR writer_id = ?)", "a", 1).Find(&ps)
		}, []string{"table:cj_posts"}, false, false},
		{"a sub-query as the table", func(db *gorm.DB) *gorm.DB {
			return db.Table("(SELECT * FROM cj_posts) AS p").Find(&ps)
		}, []string{"table:cj_posts"}, false, false},
		{"a sub-select in the columns", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Select("id, (SELECT count(*) FROM cj_writers) AS n").Where("status = ?", "a").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a", "table:cj_writers"}, false, false},
		{"a table alias", func(db *gorm.DB) *gorm.DB {
			return db.Unscoped().Table("cj_posts AS p").Where("p.status = ?", "a").Find(&ps)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:status=a"}, false, false},
		{"an association read", func(db *gorm.DB) *gorm.DB {
			var tags []cjTag
			tx := db.Model(&cjPost{ID: 3})
			_ = tx.AddError(tx.Association("Tags").Find(&tags))
			return tx
		}, []string{"conj:cj_post_tags:*", "conj:cj_post_tags:cj_post_id=3", "table:cj_tags"}, false, false},
		{"count", func(db *gorm.DB) *gorm.DB {
			var n int64
			return db.Model(&cjPost{}).Unscoped().Where("writer_id = ?", 2).Count(&n)
		}, []string{"conj:cj_posts:*", "conj:cj_posts:writer_id=2"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, last := dryDB(t)
			if tx := tt.read(db); tx.Error != nil {
				t.Fatal(tx.Error)
			}
			deps := last()
			if (deps.unknown != "") != tt.unknown {
				t.Fatalf("unknown %q; want unknown %v", deps.unknown, tt.unknown)
			}
			got := deps.groups()
			slices.Sort(got)
			if !slices.Equal(got, tt.groups) {
				t.Fatalf("groups %q; want %q", got, tt.groups)
			}
			if deps.pkLookup != tt.pk {
				t.Fatalf("pkLookup %v; want %v", deps.pkLookup, tt.pk)
			}
		})
	}
}

// Raw reads and reads of tables the analysis cannot name are unknown.
func TestAnalyzeUnknown(t *testing.T) {
	var ps []cjPost
	for name, read := range map[string]func(db *gorm.DB) *gorm.DB{
		"a lateral join":        func(db *gorm.DB) *gorm.DB { return db.Joins("JOIN LATERAL (SELECT 1) x ON true").Find(&ps) },
		"a table function":      func(db *gorm.DB) *gorm.DB { return db.Table("generate_series(1, 3)").Find(&ps) },
		"a sub-query on a join": func(db *gorm.DB) *gorm.DB { return db.Where("id IN (?)", db.Raw("SELECT 1")).Find(&ps) },
	} {
		db, last := dryDB(t)
		read(db)
		if deps := last(); deps.unknown == "" {
			t.Errorf("%s: groups %q; want unknown", name, deps.groups())
		}
	}
	db, _ := dryDB(t)
	if deps := analyzeRead(db.Raw("SELECT 1").Statement, true); deps.unknown == "" {
		t.Errorf("db.Raw: want unknown")
	}
}

// canonical gives the two sides of a comparison one form: a literal
// converted to the column's type, and the row's value.
func TestCanonical(t *testing.T) {
	db, _ := dryDB(t)
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(&cjPost{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		col    string
		lit    any
		want   string
		usable bool
	}{
		{"writer_id", "5", "5", true},
		{"writer_id", int8(5), "5", true},
		{"writer_id", uint64(5), "5", true},
		{"writer_id", "five", "", false},
		{"draft", 1, "", false},
		{"draft", "yes", "", false},
		{"draft", true, "t", true},
		{"writer_id", "010", "10", true},
		{"writer_id", "0x10", "", false},
		{"draft", "false", "f", true},
		{"status", "a&b=c", "a&b=c", true},
		{"status", string(make([]byte, maxTermValue+1)), "", false},
		{"score", 1.0, "", false},
		{"posted", time.Unix(1, 0), "", false},
		{"code", "ab", "", false},
		{"deleted_at", gorm.DeletedAt{}, nullValue, true},
	}
	for _, tt := range tests {
		f := stmt.Schema.LookUpField(tt.col)
		got, ok := fieldValue(stmt.Context, stmt.Schema, f, tt.lit)
		if ok != tt.usable || ok && got != tt.want {
			t.Errorf("%s = %#v: got %q, %v; want %q, %v", tt.col, tt.lit, got, ok, tt.want, tt.usable)
		}
	}
	// Valuers are judged by their value; a panicking one is not usable.
	if got, ok := canonical(panicValuer{}); ok {
		t.Errorf("a panicking Valuer: got %q", got)
	}
	if got, ok := canonical(&gorm.DeletedAt{Valid: true, Time: time.Unix(3, 0)}); ok {
		t.Errorf("a set DeletedAt: got %q; want no term (a time)", got)
	}
}

type panicValuer struct{}

func (panicValuer) Value() (driver.Value, error) { panic("no") }

// A row's image satisfies the conjunctions of the schemes whose columns
// it has, and escapes what would make names ambiguous.
func TestConjGroups(t *testing.T) {
	imgs := []image{{"a": "1", "b": "x&y"}, {"a": "2"}}
	got := conjGroups("t", []string{"a", "a,b", "c"}, imgs)
	slices.Sort(got)
	want := []string{"conj:t:a=1", "conj:t:a=1&b=x%26y", "conj:t:a=2"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q; want %q", got, want)
	}
}
