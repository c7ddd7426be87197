// Package demo is a small bookstore on cacheme, run by cmd/demo and by the
// command line's demo sub-command. It caches GORM reads with the query
// cache (a clause, and a per-model registration) and memoizes two
// functions ("the books of a user", "the users of a book"); it then writes
// through GORM from both sides of the many-to-many relation, in and out of
// transactions, and after every write reads every cached read again and
// checks it against the database: Run fails if a read was ever stale.
package demo

import (
	"context"
	"errors"
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

// Options configures Run.
type Options struct {
	// Out receives the demo's report.
	Out io.Writer
	// Redis is the client to use; if nil, RedisURL is opened (see
	// OpenRedis).
	Redis redis.UniversalClient
	// RedisURL and DB name the servers (see OpenRedis and OpenDB).
	RedisURL, DB string
	// Prefix is the plugin's; if empty, a fresh one ("demo<nanoseconds>:").
	Prefix string
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

// Run runs the demo: it fails if a cached read was ever stale. The plugin
// it uses is closed at the end, so that its counters are published
// (cacheme.FleetStats).
func Run(ctx context.Context, o Options) error {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	rdb := o.Redis
	if rdb == nil {
		c, closeRedis, err := OpenRedis(o.RedisURL)
		if err != nil {
			return err
		}
		defer closeRedis()
		rdb = c
	}
	dbURL := o.DB
	if dbURL == "" {
		dir, err := os.MkdirTemp("", "cacheme-demo")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir) // after the database is closed
		dbURL = filepath.Join(dir, "bookstore.db")
	}
	db, err := OpenDB(dbURL)
	if err != nil {
		return err
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = fmt.Sprintf("demo%d:", time.Now().UnixNano())
	}
	s := &store{db: db}
	err = db.Use(cacheme.New(cacheme.Settings{
		Redis:  rdb,
		Prefix: prefix,
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

// OpenRedis opens the Redis a URL names: "" starts an in-process
// miniredis (gone with the process), "redis://host:port/db" a server, and
// "cluster://host:port,host:port,..." a Redis Cluster. It pings it, and
// returns the function that closes it.
func OpenRedis(url string) (redis.UniversalClient, func(), error) {
	switch {
	case url == "":
		m, err := miniredis.Run()
		if err != nil {
			return nil, nil, err
		}
		m.ClockTTL(true) // keys expire as the clock runs, as Redis's do
		c := redis.NewClient(&redis.Options{Addr: m.Addr()})
		return c, func() { c.Close(); m.Close() }, nil
	case strings.HasPrefix(url, "cluster://"):
		var addrs []string
		for a := range strings.SplitSeq(strings.TrimPrefix(url, "cluster://"), ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			return nil, nil, fmt.Errorf("redis %q: no address after cluster://", url)
		}
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		if err := c.Ping(context.Background()).Err(); err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("redis %s: %w", url, err)
		}
		return c, func() { c.Close() }, nil
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, nil, fmt.Errorf("redis %q: %w", url, err)
	}
	c := redis.NewClient(opt)
	if err := c.Ping(context.Background()).Err(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("redis %s: %w", url, err)
	}
	return c, func() { c.Close() }, nil
}

// OpenDB opens the database a URL names: a postgres:// (or postgresql://)
// URL or a SQLite file path (Run makes a fresh SQLite file in a temporary
// directory, removed when it returns, when it is given none). The demo's tables are prefixed with "cacheme_demo_", so that
// it never touches an application's.
func OpenDB(url string) (*gorm.DB, error) {
	cfg := &gorm.Config{
		Logger:         logger.Discard,
		NamingStrategy: schema.NamingStrategy{TablePrefix: "cacheme_demo_"},
	}
	if IsPostgres(url) {
		return gorm.Open(postgres.Open(url), cfg)
	}
	if url == "" {
		return nil, errors.New("no database URL")
	}
	return gorm.Open(sqlite.Open(url), cfg)
}

// IsPostgres reports whether a database URL names PostgreSQL.
func IsPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}
