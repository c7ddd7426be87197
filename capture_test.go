package cacheme_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

// captured is a memoized function of the capture tests: it counts its
// computations, and joins only the groups it names (none by default).
type captured[R any] struct {
	calls atomic.Int64
	f     func(context.Context, uint) (R, error)
}

func capture[R any](t *testing.T, p *cacheme.Plugin, spec cacheme.Spec[uint, R], fn func(ctx context.Context, id uint) (R, error)) *captured[R] {
	t.Helper()
	c := &captured[R]{}
	if spec.Key == nil {
		name := t.Name()
		spec.Key = func(id uint) string { return fmt.Sprintf("cap:%s:%d", name, id) }
	}
	if spec.Tag == "" {
		spec.Tag = "cap"
	}
	c.f = mustWrap(t, p, spec, func(ctx context.Context, id uint) (R, error) {
		c.calls.Add(1)
		return fn(ctx, id)
	})
	return c
}

// get calls c and reports whether it computed.
func (c *captured[R]) get(t *testing.T, id uint) (R, bool) {
	t.Helper()
	before := c.calls.Load()
	v, err := c.f(bg, id)
	ok(t, err)
	return v, c.calls.Load() != before
}

func bookNames(books []Book) string {
	names := make([]string, len(books))
	for i, b := range books {
		names[i] = b.Name
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// The Quick start's function, with only its one declared group: the books
// of a user, read through the association. Renaming one of them, and
// every association change, is seen without naming the books' groups.
func TestCaptureQuickStart(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	booksOf := capture(t, e.p, cacheme.Spec[uint, string]{
		Groups: func(id uint, _ string) []string { return []string{fmt.Sprintf("User:%d:books", id)} },
	}, func(ctx context.Context, id uint) (string, error) {
		var books []Book
		err := e.db.WithContext(ctx).Model(&User{ID: id}).Association("Books").Find(&books)
		return bookNames(books), err
	})
	steps := []struct {
		name  string
		write func() error
		want  string // books of user 1 after the write
		miss  bool
	}{
		{"first read", func() error { return nil }, "go,sql", true},
		{"cached", func() error { return nil }, "go,sql", false},
		{"rename one of the user's books", func() error {
			return e.db.Model(&Book{ID: 2}).Update("name", "postgres").Error
		}, "go,postgres", true},
		{"cached again", func() error { return nil }, "go,postgres", false},
		{"another user's join rows change", func() error {
			return e.db.Model(&User{ID: 3}).Association("Books").Append(&Book{ID: 1})
		}, "go,postgres", false},
		{"the user's join rows change", func() error {
			return e.db.Model(&Book{ID: 3}).Association("Users").Append(&User{ID: 1})
		}, "go,postgres,redis", true},
	}
	for _, s := range steps {
		ok(t, s.write())
		settle()
		got, miss := booksOf.get(t, 1)
		if got != s.want || miss != s.miss {
			t.Fatalf("%s: got %q (computed %v); want %q (computed %v)", s.name, got, miss, s.want, s.miss)
		}
	}
}

// What a computation captures: the conjunctions of its reads, the cache
// keys of the rows it returned and the many-to-many keys of the join rows
// it read by, and nothing when capture is off.
func TestCaptureGroups(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	read := func(ctx context.Context, id uint) (string, error) {
		var b Book
		err := e.db.WithContext(ctx).First(&b, id).Error
		return b.Name, err
	}
	tests := []struct {
		name        string
		noCapture   bool
		invalidate  func() error
		invalidated bool
	}{
		{"the row's cache key", false, func() error { _, err := e.p.InvalidateGroups(bg, "Book:2"); return err }, true},
		{"another row's cache key", false, func() error { _, err := e.p.InvalidateGroups(bg, "Book:3"); return err }, false},
		{"the row's conjunction (a write)", false, func() error {
			return e.db.Model(&Book{ID: 2}).Update("author_id", 3).Error
		}, true},
		{"another row's write", false, func() error {
			return e.db.Model(&Book{ID: 3}).Update("author_id", 4).Error
		}, false},
		{"capture off: a write", true, func() error {
			return e.db.Model(&Book{ID: 2}).Update("author_id", 5).Error
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := capture(t, e.p, cacheme.Spec[uint, string]{NoCapture: tt.noCapture}, read)
			c.get(t, 2)
			ok(t, tt.invalidate())
			if _, miss := c.get(t, 2); miss != tt.invalidated {
				t.Fatalf("computed again: %v; want %v", miss, tt.invalidated)
			}
		})
	}

	// The many-to-many keys of an association read.
	u1 := capture(t, e.p, cacheme.Spec[uint, string]{}, func(ctx context.Context, id uint) (string, error) {
		var books []Book
		err := e.db.WithContext(ctx).Model(&User{ID: id}).Association("Books").Find(&books)
		return bookNames(books), err
	})
	u1.get(t, 1)
	_, err := e.p.InvalidateGroups(bg, "User:2:books")
	ok(t, err)
	if _, miss := u1.get(t, 1); miss {
		t.Fatalf("another user's m2m key invalidated the books of user 1")
	}
	_, err = e.p.InvalidateGroups(bg, "User:1:books")
	ok(t, err)
	if _, miss := u1.get(t, 1); !miss {
		t.Fatalf("User:1:books did not invalidate the books of user 1")
	}
}

// A memoized call made inside another computation passes its groups up,
// whether it computed or hit: the outer result is invalidated by what the
// inner one depends on.
func TestCaptureNested(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	name := capture(t, e.p, cacheme.Spec[uint, string]{Key: func(id uint) string { return fmt.Sprintf("name:%d", id) }},
		func(ctx context.Context, id uint) (string, error) {
			var b Book
			err := e.db.WithContext(ctx).First(&b, id).Error
			return b.Name, err
		})
	// The inner one is cached before the outer one first runs: the outer
	// computation gets its groups from the cached entry.
	name.get(t, 2)
	shout := capture(t, e.p, cacheme.Spec[uint, string]{}, func(ctx context.Context, id uint) (string, error) {
		n, err := name.f(ctx, id)
		return strings.ToUpper(n), err
	})
	if got, _ := shout.get(t, 2); got != "SQL" {
		t.Fatalf("got %q", got)
	}
	if _, miss := shout.get(t, 2); miss {
		t.Fatalf("the outer result was not cached")
	}
	ok(t, e.db.Model(&Book{ID: 2}).Update("name", "pg").Error)
	if got, miss := shout.get(t, 2); got != "PG" || !miss {
		t.Fatalf("after the inner row changed: got %q (computed %v); want PG, computed", got, miss)
	}
}

// A result computed from data read inside a transaction is returned but
// never stored: it may be uncommitted (the transaction rolls back) or a
// snapshot older than an invalidation. Meanwhile other readers never get
// the transaction's rows from the cache. On PostgreSQL at READ COMMITTED
// and REPEATABLE READ, and on SQLite.
func TestCaptureTransactions(t *testing.T) {
	levels := []sql.IsolationLevel{sql.LevelDefault}
	if os.Getenv("CACHEME_TEST_POSTGRES") != "" {
		levels = append(levels, sql.LevelReadCommitted, sql.LevelRepeatableRead)
	}
	for _, level := range levels {
		t.Run(level.String(), func(t *testing.T) {
			e := newEnv(t, cacheme.Settings{}, gorm.Config{})
			seed(t, e.db)
			var src *gorm.DB // the handle the function reads through
			name := capture(t, e.p, cacheme.Spec[uint, string]{}, func(ctx context.Context, id uint) (string, error) {
				var b Book
				err := src.WithContext(ctx).First(&b, id).Error
				return b.Name, err
			})
			errRollback := errors.New("roll back")
			err := e.db.Transaction(func(tx *gorm.DB) error {
				ok(t, tx.Model(&Book{ID: 2}).Update("name", "uncommitted").Error)
				src = tx
				if got, _ := name.get(t, 2); got != "uncommitted" {
					t.Fatalf("inside the transaction: got %q; want its own write", got)
				}
				// Not stored: the next call computes again.
				if _, miss := name.get(t, 2); !miss {
					t.Fatalf("a result read inside a transaction was cached")
				}
				return errRollback
			}, &sql.TxOptions{Isolation: level})
			isErr(t, err, errRollback)
			if n := e.p.Stats().Tags["cap"].Uncached; n != 2 {
				t.Fatalf("Uncached: got %d; want 2", n)
			}
			src = e.db
			settle()
			if got, miss := name.get(t, 2); got != "sql" || !miss {
				t.Fatalf("after the rollback: got %q (computed %v); want the committed sql, computed", got, miss)
			}
			if _, miss := name.get(t, 2); miss {
				t.Fatalf("outside a transaction the result was not cached")
			}
		})
	}
}

// The query cache is bypassed inside a transaction: a read sees the
// transaction's own writes and snapshot, and stores nothing.
func TestQueryCacheTransactions(t *testing.T) {
	e := newQCEnv(t, cacheme.Settings{})
	e.warm(t, map[string]func(db *gorm.DB) (any, error){"post 1": postByID(1)})
	errRollback := errors.New("roll back")
	err := e.db.Transaction(func(tx *gorm.DB) error {
		ok(t, tx.Model(&Post{ID: 1}).Update("title", "uncommitted").Error)
		var p Post
		before := e.q.Load()
		ok(t, tx.Clauses(cacheme.Cached{}).First(&p, 1).Error)
		equals(t, p.Title, "uncommitted")
		if e.q.Load() == before {
			t.Fatalf("a cached read inside a transaction did not reach the database")
		}
		// Another reader, outside: the committed row, from the cache or
		// not, never the uncommitted one.
		var q Post
		ok(t, e.cached().First(&q, 1).Error)
		equals(t, q.Title, "p1")
		return errRollback
	})
	isErr(t, err, errRollback)
	if e.served(t, postByID(1)) {
		t.Fatalf("the rollback left the read cached (it invalidates what it touched)")
	}
}

// BenchmarkCaptureMiss measures what dependency capture adds to a miss of
// a memoized function that reads one row: each iteration invalidates the
// entry, then calls the function, with capture on and off (NoCapture).
//
//	CACHEME_TEST_REDIS=redis://127.0.0.1:6379/0 CACHEME_TEST_POSTGRES='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	  go test -run '^$' -bench BenchmarkCaptureMiss -count 8 .
func BenchmarkCaptureMiss(b *testing.B) {
	e := newQCEnv(b, cacheme.Settings{})
	names := []string{"nocapture", "capture"}
	var fs []func(context.Context, uint) (string, error)
	for _, name := range names {
		fs = append(fs, mustWrap(b, e.p, cacheme.Spec[uint, string]{
			Key:       func(id uint) string { return fmt.Sprintf("bench:%s:%d", name, id) },
			Groups:    func(id uint, _ string) []string { return []string{fmt.Sprintf("Post:%d", id)} },
			Tag:       "bench",
			NoCapture: name == "nocapture",
		}, func(ctx context.Context, id uint) (string, error) {
			var p Post
			err := e.db.WithContext(ctx).First(&p, id).Error
			return p.Title, err
		}))
	}
	b.ReportAllocs()
	interleaved(b, names, func(i int) error {
		if _, err := e.p.InvalidateKeys(bg, fmt.Sprintf("bench:%s:2", names[i])); err != nil {
			return err
		}
		_, err := fs[i](bg, 2)
		return err
	})
}
