// Package demo is a small bookstore on cacheme: it memoizes "the books of
// a user" and "the users of a book", writes through GORM from both sides of
// the many-to-many relation, and checks after every step that exactly the
// affected entries were invalidated. cmd/demo runs it, and so do the
// command line's demo sub-command and its embedded default (cmd/cacheme).
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	Books []Book `gorm:"many2many:user_books;constraint:OnDelete:CASCADE"`
}

// CacheKey names the group of everything cached about the user.
func (u User) CacheKey() string { return fmt.Sprintf("User:%d", u.ID) }

// Book is a book of the bookstore.
type Book struct {
	ID    uint
	Title string
	Users []User `gorm:"many2many:user_books;constraint:OnDelete:CASCADE"`
}

// CacheKey names the group of everything cached about the book.
func (b Book) CacheKey() string { return fmt.Sprintf("Book:%d", b.ID) }

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
	db       *gorm.DB
	p        *cacheme.Plugin
	booksOf  func(context.Context, uint) ([]string, error)
	usersOf  func(context.Context, uint) ([]string, error)
	mu       sync.Mutex
	computed []string // keys computed since the last step
	groups   []string // groups invalidated since the last step
}

// Run runs the demo: it exits without error only if every step behaved as
// expected. The plugin it uses is closed at the end, so that its counters
// are published (cacheme.FleetStats).
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
	db, err := OpenDB(o.DB)
	if err != nil {
		return err
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = fmt.Sprintf("demo%d:", time.Now().UnixNano())
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
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
	if err := s.p.RegisterM2M(m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
		"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books"),
	}}); err != nil {
		return err
	}
	if err := db.Migrator().DropTable("cacheme_demo_user_books", &User{}, &Book{}); err != nil {
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

func (s *store) memoize() error {
	var err error
	s.booksOf, err = cacheme.Wrap(s.p, cacheme.Spec[uint, []string]{
		Tag:    "books-of-user",
		Key:    func(id uint) string { return fmt.Sprintf("user:%d>books", id) },
		Groups: func(id uint, _ []string) []string { return []string{fmt.Sprintf("User:%d:books", id)} },
		Miss:   func(_ context.Context, key string, _ uint) { s.miss(key) },
	}, func(ctx context.Context, id uint) ([]string, error) {
		var u User
		if err := s.db.WithContext(ctx).Preload("Books").First(&u, id).Error; err != nil {
			return nil, err
		}
		titles := []string{}
		for _, b := range u.Books {
			titles = append(titles, b.Title)
		}
		slices.Sort(titles)
		return titles, nil
	})
	if err != nil {
		return err
	}
	s.usersOf, err = cacheme.Wrap(s.p, cacheme.Spec[uint, []string]{
		Tag:    "users-of-book",
		Key:    func(id uint) string { return fmt.Sprintf("book:%d>users", id) },
		Groups: func(id uint, _ []string) []string { return []string{fmt.Sprintf("Book:%d:users", id)} },
		Miss:   func(_ context.Context, key string, _ uint) { s.miss(key) },
	}, func(ctx context.Context, id uint) ([]string, error) {
		var users []User
		err := s.db.WithContext(ctx).Model(&Book{ID: id}).Association("Users").Find(&users)
		names := []string{}
		for _, u := range users {
			names = append(names, u.Name)
		}
		slices.Sort(names)
		return names, err
	})
	return err
}

func (s *store) miss(key string) {
	s.mu.Lock()
	s.computed = append(s.computed, key)
	s.mu.Unlock()
}

// take returns and clears what happened since the last call.
func (s *store) take() (computed, groups []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	computed, groups = s.computed, s.groups
	s.computed, s.groups = nil, nil
	slices.Sort(groups)
	return computed, slices.Compact(groups)
}

// read is one expected read: which function, which id, the expected value
// and whether it must be a hit.
type read struct {
	name string
	fn   func(context.Context, uint) ([]string, error)
	id   uint
	want []string
	hit  bool
}

func (s *store) script(ctx context.Context, out io.Writer) error {
	alice, bob := User{Name: "alice"}, User{Name: "bob"}
	gobook, redisbook := Book{Title: "Go"}, Book{Title: "Redis"}
	for _, v := range []any{&alice, &bob, &gobook, &redisbook} {
		if err := s.db.Create(v).Error; err != nil {
			return err
		}
	}
	s.take()
	booksOf := func(u *User, want []string, hit bool) read {
		return read{"books of " + u.Name, s.booksOf, u.ID, want, hit}
	}
	usersOf := func(b *Book, want []string, hit bool) read {
		return read{"users of " + b.Title, s.usersOf, b.ID, want, hit}
	}
	steps := []struct {
		title string
		write func() error
		reads []read
	}{
		{"first reads compute, second reads hit", nil, []read{
			booksOf(&alice, nil, false), booksOf(&alice, nil, true),
			usersOf(&gobook, nil, false), usersOf(&gobook, nil, true),
		}},
		{"alice.Books.Append(Go): user side", func() error {
			return s.db.Model(&alice).Association("Books").Append(&gobook)
		}, []read{
			booksOf(&alice, []string{"Go"}, false), usersOf(&gobook, []string{"alice"}, false),
			booksOf(&alice, []string{"Go"}, true),
		}},
		{"Go.Users.Append(bob): book side", func() error {
			return s.db.Model(&gobook).Association("Users").Append(&bob)
		}, []read{
			usersOf(&gobook, []string{"alice", "bob"}, false), booksOf(&bob, []string{"Go"}, false),
			booksOf(&alice, []string{"Go"}, true),
		}},
		{"alice.Books.Append(Redis), on a fresh handle of alice", func() error {
			// A handle whose Books field is empty: GORM writes only the new
			// join row (alice's in-memory Books would be written again).
			return s.db.Model(&User{ID: alice.ID}).Association("Books").Append(&redisbook)
		}, []read{
			booksOf(&alice, []string{"Go", "Redis"}, false), usersOf(&redisbook, []string{"alice"}, false),
			usersOf(&gobook, []string{"alice", "bob"}, true),
		}},
		{"Go.Users.Delete(alice): remove from the book side", func() error {
			return s.db.Model(&gobook).Association("Users").Delete(&alice)
		}, []read{
			booksOf(&alice, []string{"Redis"}, false), usersOf(&gobook, []string{"bob"}, false),
			booksOf(&bob, []string{"Go"}, true),
		}},
		{"rename the Redis book (update)", func() error {
			return s.db.Model(&redisbook).Update("title", "Redis in Action").Error
		}, []read{
			usersOf(&redisbook, []string{"alice"}, true),
		}},
		{"delete the Go book, which still has join rows", func() error {
			return s.db.Delete(&gobook).Error
		}, []read{
			booksOf(&bob, []string{}, false), usersOf(&redisbook, []string{"alice"}, true),
		}},
		{"bob.Books.Replace(Redis), in a transaction", func() error {
			return s.db.Transaction(func(tx *gorm.DB) error {
				return tx.Model(&bob).Association("Books").Replace(&redisbook)
			})
		}, []read{
			booksOf(&bob, []string{"Redis in Action"}, false), usersOf(&redisbook, []string{"alice", "bob"}, false),
		}},
		{"alice.Books.Clear()", func() error {
			return s.db.Model(&alice).Association("Books").Clear()
		}, []read{
			booksOf(&alice, []string{}, false), usersOf(&redisbook, []string{"bob"}, false),
			booksOf(&bob, []string{"Redis in Action"}, true),
		}},
	}
	failed := 0
	for i, st := range steps {
		fmt.Fprintf(out, "%d. %s\n", i+1, st.title)
		if st.write != nil {
			start := time.Now()
			if err := st.write(); err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
			_, groups := s.take()
			fmt.Fprintf(out, "   write took %v, invalidated %s\n", time.Since(start).Round(time.Microsecond), strings.Join(groups, ", "))
		}
		for _, r := range st.reads {
			s.take()
			start := time.Now()
			got, err := r.fn(ctx, r.id)
			took := time.Since(start).Round(time.Microsecond)
			if err != nil {
				return fmt.Errorf("step %d: %s: %w", i+1, r.name, err)
			}
			computed, _ := s.take()
			hit := len(computed) == 0
			verdict := "ok"
			if hit != r.hit || !slices.Equal(nonNil(got), nonNil(r.want)) {
				verdict = fmt.Sprintf("UNEXPECTED (want %q, %s)", nonNil(r.want), hitMiss(r.hit))
				failed++
			}
			fmt.Fprintf(out, "   %-16s %-5s %9v  %q  %s\n", r.name, hitMiss(hit), took, nonNil(got), verdict)
		}
	}
	st := s.p.Stats().Total
	fmt.Fprintf(out, "stats: %d hits, %d misses, %d entries invalidated\n", st.Hits, st.Misses, st.Invalidations)
	if failed > 0 {
		return fmt.Errorf("%d reads did not behave as expected", failed)
	}
	fmt.Fprintln(out, "every step behaved as expected")
	return nil
}

func hitMiss(hit bool) string {
	if hit {
		return "hit"
	}
	return "miss"
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
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
// URL, a SQLite file path, or "" for a fresh SQLite file in a temporary
// directory. The demo's tables are prefixed with "cacheme_demo_", so that
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
		dir, err := os.MkdirTemp("", "cacheme-demo")
		if err != nil {
			return nil, err
		}
		url = filepath.Join(dir, "bookstore.db")
	}
	return gorm.Open(sqlite.Open(url), cfg)
}

// IsPostgres reports whether a database URL names PostgreSQL.
func IsPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}
