// Command demo runs a small bookstore on cacheme. It caches GORM reads with
// the query cache (a clause, and a per-model registration) and memoizes two
// functions ("the books of a user", "the users of a book"); it then writes
// through GORM from both sides of the many-to-many relation, in and out of
// transactions, and after every write reads every cached read again and
// checks it against the database: it exits 0 only if no read was ever
// stale.
//
// By default it runs on an embedded SQLite file and an in-process Redis
// (miniredis); --db and --redis switch to real servers:
//
//	go run ./cmd/demo
//	go run ./cmd/demo --db 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' --redis redis://127.0.0.1:6379/0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/m2m"
)

// User is a reader of the bookstore.
type User struct {
	ID    uint
	Name  string
	Books []Book `gorm:"many2many:user_books"`
}

// CacheKey names the group of everything cached about the user.
func (u User) CacheKey() string { return fmt.Sprintf("User:%d", u.ID) }

// Book is a book of the bookstore.
type Book struct {
	ID    uint
	Title string
	Users []User `gorm:"many2many:user_books"`
}

// CacheKey names the group of everything cached about the book.
func (b Book) CacheKey() string { return fmt.Sprintf("Book:%d", b.ID) }

// UserBook is the join table of User.Books and Book.Users; it names the
// keys of both sides, so that every join-table write invalidates them.
type UserBook struct {
	UserID uint `gorm:"primaryKey"`
	BookID uint `gorm:"primaryKey"`
}

// M2MCacheKeys returns the key functions of both sides.
func (UserBook) M2MCacheKeys() map[string]m2m.KeyFunc {
	return map[string]m2m.KeyFunc{"User": m2m.Format("User:%v:books"), "Book": m2m.Format("Book:%v:users")}
}

func main() {
	dbURL := flag.String("db", "", "database: a SQLite file path or a postgres:// URL (default: a fresh SQLite file in a temp dir)")
	redisURL := flag.String("redis", "", "Redis URL, e.g. redis://127.0.0.1:6379/0 (default: embedded miniredis)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *dbURL, *redisURL); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

// store is the demo's state: the database, the plugin and the memoized reads.
type store struct {
	db      *gorm.DB
	p       *cacheme.Plugin
	booksOf memoized
	usersOf memoized
	mu      sync.Mutex
	groups  []string // groups invalidated since the last step
}

// memoized is a function and its memoized form.
type memoized struct {
	raw, memo func(context.Context, uint) ([]string, error)
}

func run(ctx context.Context, out io.Writer, dbURL, redisURL string) error {
	rdb, closeRedis, err := openRedis(redisURL)
	if err != nil {
		return err
	}
	defer closeRedis()
	db, err := openDB(dbURL)
	if err != nil {
		return err
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	s := &store{db: db}
	err = db.Use(cacheme.New(cacheme.Settings{
		Redis:  rdb,
		Prefix: fmt.Sprintf("demo%d:", time.Now().UnixNano()),
		InvalidationHook: func(_ context.Context, groups []string, _ int) {
			s.mu.Lock()
			s.groups = append(s.groups, groups...)
			s.mu.Unlock()
		},
		ErrorHook: func(_ context.Context, err error) { fmt.Fprintln(out, "  cacheme error:", err) },
	}))
	if err != nil {
		return err
	}
	s.p = cacheme.Of(db)
	defer s.p.Close(ctx)
	// Every primary-key lookup of a user is cached, without a clause.
	if err := s.p.CacheQueries(&User{}, cacheme.QueryCache{TTL: 15 * time.Minute, PrimaryKeyOnly: true}); err != nil {
		return err
	}
	if err := db.Migrator().DropTable("cacheme_demo_user_books", &User{}, &Book{}); err != nil {
		return err
	}
	if err := db.SetupJoinTable(&User{}, "Books", &UserBook{}); err != nil {
		return err
	}
	if err := db.SetupJoinTable(&Book{}, "Users", &UserBook{}); err != nil {
		return err
	}
	if err := db.AutoMigrate(&User{}, &Book{}); err != nil {
		return err
	}
	if err := s.memoize(); err != nil {
		return err
	}
	return s.script(ctx, out)
}

// memoize wraps the two functions. Each names only its own many-to-many
// group; what it reads (the books' rows, their join rows) is captured.
func (s *store) memoize() error {
	s.booksOf.raw = func(ctx context.Context, id uint) ([]string, error) {
		var books []Book
		err := s.db.WithContext(ctx).Model(&User{ID: id}).Association("Books").Find(&books)
		titles := []string{}
		for _, b := range books {
			titles = append(titles, b.Title)
		}
		slices.Sort(titles)
		return titles, err
	}
	s.usersOf.raw = func(ctx context.Context, id uint) ([]string, error) {
		var users []User
		err := s.db.WithContext(ctx).Model(&Book{ID: id}).Association("Users").Find(&users)
		names := []string{}
		for _, u := range users {
			names = append(names, u.Name)
		}
		slices.Sort(names)
		return names, err
	}
	var err error
	s.booksOf.memo, err = cacheme.Wrap(s.p, cacheme.Spec[uint, []string]{
		Key:    func(id uint) string { return fmt.Sprintf("user:%d>books", id) },
		Groups: func(id uint, _ []string) []string { return []string{fmt.Sprintf("User:%d:books", id)} },
		Tag:    "booksOf",
	}, s.booksOf.raw)
	if err != nil {
		return err
	}
	s.usersOf.memo, err = cacheme.Wrap(s.p, cacheme.Spec[uint, []string]{
		Key:    func(id uint) string { return fmt.Sprintf("book:%d>users", id) },
		Groups: func(id uint, _ []string) []string { return []string{fmt.Sprintf("Book:%d:users", id)} },
		Tag:    "usersOf",
	}, s.usersOf.raw)
	return err
}

// takeGroups returns and clears the groups invalidated since the last call.
func (s *store) takeGroups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	groups := s.groups
	s.groups = nil
	slices.Sort(groups)
	return slices.Compact(groups)
}

// read is one cached read of the board: run reads through the cache (or,
// with cached false, straight from the database), and returns what the
// application gets.
type read struct {
	name string
	run  func(ctx context.Context, cached bool) (any, error)
}

// board returns the cached reads the demo checks after every write.
func (s *store) board(alice, bob *User, gobook, redisbook *Book) []read {
	db := func(cached bool) *gorm.DB {
		if cached {
			return s.db.Clauses(cacheme.Cached{TTL: time.Hour})
		}
		return s.db.Clauses(cacheme.NoCache{})
	}
	memo := func(f memoized, id uint) func(context.Context, bool) (any, error) {
		return func(ctx context.Context, cached bool) (any, error) {
			if cached {
				return f.memo(ctx, id)
			}
			return f.raw(ctx, id)
		}
	}
	return []read{
		{"Go, by id", func(_ context.Context, cached bool) (any, error) {
			var b Book
			err := db(cached).First(&b, gobook.ID).Error
			return b.Title, err
		}},
		{"books titled Redis", func(_ context.Context, cached bool) (any, error) {
			var books []Book
			err := db(cached).Where("title = ?", "Redis").Order("id").Find(&books).Error
			return len(books), err
		}},
		{"count of books", func(_ context.Context, cached bool) (any, error) {
			var n int64
			err := db(cached).Model(&Book{}).Count(&n).Error
			return n, err
		}},
		{"alice, by id", func(_ context.Context, cached bool) (any, error) {
			var u User
			q := s.db
			if !cached {
				q = q.Clauses(cacheme.NoCache{})
			}
			err := q.First(&u, alice.ID).Error // cached by CacheQueries
			return u.Name, err
		}},
		{"bob with his books", func(_ context.Context, cached bool) (any, error) {
			var u User
			err := db(cached).Preload("Books", func(q *gorm.DB) *gorm.DB { return q.Order("title") }).First(&u, bob.ID).Error
			titles := []string{}
			for _, b := range u.Books {
				titles = append(titles, b.Title)
			}
			return titles, err
		}},
		{"books of alice", memo(s.booksOf, alice.ID)},
		{"books of bob", memo(s.booksOf, bob.ID)},
		{"users of Go", memo(s.usersOf, gobook.ID)},
		{"users of Redis", memo(s.usersOf, redisbook.ID)},
	}
}

func (s *store) script(ctx context.Context, out io.Writer) error {
	alice, bob := User{Name: "alice"}, User{Name: "bob"}
	gobook, redisbook := Book{Title: "Go"}, Book{Title: "Redis"}
	for _, v := range []any{&alice, &bob, &gobook, &redisbook} {
		if err := s.db.Create(v).Error; err != nil {
			return err
		}
	}
	s.takeGroups()
	errRollback := errors.New("rolled back")
	steps := []struct {
		title string
		write func() error
	}{
		{"first reads compute; the board is read twice", nil},
		{"alice.Books.Append(Go): the user side", func() error {
			return s.db.Model(&alice).Association("Books").Append(&gobook)
		}},
		{"Go.Users.Append(bob): the book side", func() error {
			return s.db.Model(&gobook).Association("Users").Append(&bob)
		}},
		{"alice.Books.Append(Redis), on a fresh handle of alice", func() error {
			return s.db.Model(&User{ID: alice.ID}).Association("Books").Append(&redisbook)
		}},
		{"Go.Users.Delete(alice): remove from the book side", func() error {
			return s.db.Model(&gobook).Association("Users").Delete(&alice)
		}},
		{"rename the Redis book (an update)", func() error {
			return s.db.Model(&redisbook).Update("title", "Redis in Action").Error
		}},
		{"a new book titled Redis (an insert)", func() error {
			return s.db.Create(&Book{Title: "Redis"}).Error
		}},
		{"rename alice in a transaction that rolls back", func() error {
			err := s.db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&alice).Update("name", "alicia").Error; err != nil {
					return err
				}
				return errRollback
			})
			if errors.Is(err, errRollback) {
				return nil
			}
			return err
		}},
		{"bob.Books.Replace(Redis in Action), in a transaction", func() error {
			return s.db.Transaction(func(tx *gorm.DB) error {
				return tx.Model(&bob).Association("Books").Replace(&redisbook)
			})
		}},
		{"delete the Go book", func() error {
			return s.db.Delete(&gobook).Error
		}},
		{"alice.Books.Clear()", func() error {
			return s.db.Model(&alice).Association("Books").Clear()
		}},
	}
	board := s.board(&alice, &bob, &gobook, &redisbook)
	stale := 0
	for i, st := range steps {
		fmt.Fprintf(out, "%d. %s\n", i+1, st.title)
		passes := 1
		if st.write != nil {
			start := time.Now()
			if err := st.write(); err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
			fmt.Fprintf(out, "   write took %v; invalidated %s\n", time.Since(start).Round(time.Microsecond), strings.Join(s.takeGroups(), " "))
		} else {
			passes = 2
		}
		for pass := 0; pass < passes; pass++ {
			var line []string
			for _, r := range board {
				hit, ok, err := s.check(ctx, r)
				if err != nil {
					return fmt.Errorf("step %d: %s: %w", i+1, r.name, err)
				}
				mark := "miss"
				if hit {
					mark = "hit"
				}
				if !ok {
					mark += " STALE"
					stale++
				}
				line = append(line, fmt.Sprintf("%s: %s", r.name, mark))
			}
			fmt.Fprintf(out, "   %s\n", strings.Join(line, ", "))
		}
	}
	st := s.p.Stats().Total
	fmt.Fprintf(out, "stats: %d hits, %d misses, %d entries invalidated\n", st.Hits, st.Misses, st.Invalidations)
	if stale > 0 {
		return fmt.Errorf("%d cached reads were stale", stale)
	}
	fmt.Fprintln(out, "every cached read matched the database after every write")
	return nil
}

// check reads r through the cache and straight from the database, and
// reports whether the cache served it without computing, and whether it
// returned what the database holds.
func (s *store) check(ctx context.Context, r read) (hit, fresh bool, err error) {
	before := s.p.Stats().Total.Misses
	got, gotErr := r.run(ctx, true)
	hit = s.p.Stats().Total.Misses == before
	want, wantErr := r.run(ctx, false)
	switch {
	case wantErr != nil && !errors.Is(wantErr, gorm.ErrRecordNotFound):
		return false, false, wantErr
	case gotErr != nil && !errors.Is(gotErr, gorm.ErrRecordNotFound):
		return false, false, gotErr
	}
	// A read that finds nothing is a result too (ErrRecordNotFound).
	return hit, reflect.DeepEqual(got, want) && errors.Is(gotErr, gorm.ErrRecordNotFound) == errors.Is(wantErr, gorm.ErrRecordNotFound), nil
}

func openRedis(url string) (redis.UniversalClient, func(), error) {
	if url == "" {
		m, err := miniredis.Run()
		if err != nil {
			return nil, nil, err
		}
		m.ClockTTL(true) // keys expire as the clock runs, as Redis's do
		c := redis.NewClient(&redis.Options{Addr: m.Addr()})
		return c, func() { c.Close(); m.Close() }, nil
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis: %w", err)
	}
	c := redis.NewClient(opt)
	if err := c.Ping(context.Background()).Err(); err != nil {
		return nil, nil, fmt.Errorf("--redis %s: %w", url, err)
	}
	return c, func() { c.Close() }, nil
}

func openDB(url string) (*gorm.DB, error) {
	cfg := &gorm.Config{
		Logger: logger.Discard,
		// The demo's own tables, so that it never touches an application's.
		NamingStrategy: schema.NamingStrategy{TablePrefix: "cacheme_demo_"},
	}
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		return gorm.Open(postgres.Open(url), cfg)
	}
	if url == "" {
		dir, err := os.MkdirTemp("", "cacheme-demo")
		if err != nil {
			return nil, err
		}
		url = filepath.Join(dir, "bookstore.db")
	}
	return gorm.Open(sqlite.Open(url), cfg)
}
