package cacheme_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/m2m"
	"github.com/gormcacheme/cacheme/nodes"
)

// The seed's models (upstream django-cacheme tests/testapp): TestUser with
// cache_key "User:<id>" and Book with cache_key "Book:<id>" and a
// many-to-many Users, whose reverse relation is User.Books (same join
// table). Book also has the key "Author:<author>:books", which depends on
// a column, to test updates that move a row from one key to another.

// User is the seed's TestUser.
type User struct {
	ID    uint
	Name  string
	Books []Book `gorm:"many2many:user_books;constraint:OnDelete:CASCADE"`
}

func (u User) CacheKey() string { return fmt.Sprintf("User:%d", u.ID) }

// Book is the seed's Book.
type Book struct {
	ID       uint
	Name     string
	AuthorID uint
	Users    []User `gorm:"many2many:user_books;constraint:OnDelete:CASCADE"`
}

func (b Book) CacheKey() []string {
	return []string{fmt.Sprintf("Book:%d", b.ID), fmt.Sprintf("Author:%d:books", b.AuthorID)}
}

// Note is a soft-deleted model.
type Note struct {
	ID        uint
	Text      string
	DeletedAt gorm.DeletedAt
}

func (n Note) CacheKey() string { return fmt.Sprintf("Note:%d", n.ID) }

// Account has a unique column, for upserts that conflict on it.
type Account struct {
	ID    uint
	Email string `gorm:"uniqueIndex;size:100"`
	Name  string
}

func (a Account) CacheKey() string { return fmt.Sprintf("Account:%d", a.ID) }

// InvalidUserModelNode is the seed's InvalidUserNode (Meta.model =
// TestUser, key "user:<id>"). The name differs from upstream's to keep it
// apart from the node-mode InvalidUserNode of cacheme's own tests.
type InvalidUserModelNode struct{ ID uint }

func (n InvalidUserModelNode) Key() string { return fmt.Sprintf("user:%d", n.ID) }
func (InvalidUserModelNode) Model() any    { return &User{} }

// InvalidUserTextNode holds the user's id as text.
type InvalidUserTextNode struct{ ID string }

func (n InvalidUserTextNode) Key() string { return "usertext:" + n.ID }
func (InvalidUserTextNode) Model() any    { return &User{} }

// InvalidBookModelNode is the seed's InvalidBookNode (key "book:<id>").
type InvalidBookModelNode struct{ ID uint }

func (n InvalidBookModelNode) Key() string { return fmt.Sprintf("book:%d", n.ID) }
func (InvalidBookModelNode) Model() any    { return &Book{} }

// InvalidUserBookNode is the seed's m2m node on Book.users.through, key
// "user:<user>:book:<book>".
type InvalidUserBookNode struct{ User, Book string }

func (n InvalidUserBookNode) Key() string      { return fmt.Sprintf("user:%s:book:%s", n.User, n.Book) }
func (InvalidUserBookNode) M2M() (any, string) { return &Book{}, "Users" }

// bookUsers is the seed's m2m_cache_keys on Book.users.through.
func bookUsers() m2m.Table {
	return m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
		"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books"),
	}}
}

// env is a plugin on a test Redis and a test database with the fixtures
// migrated and the seed's relation and nodes registered.
type env struct {
	p  *cacheme.Plugin
	db *gorm.DB
}

// newEnv returns an env; cfg configures gorm. Nodes are registered before
// db.Use.
func newEnv(t *testing.T, s cacheme.Settings, cfg gorm.Config) env {
	t.Helper()
	p, _ := newPlugin(t, s)
	return newEnvOn(t, p, cfg)
}

func newEnvOn(t *testing.T, p *cacheme.Plugin, cfg gorm.Config) env {
	t.Helper()
	ok(t, p.RegisterM2M(bookUsers()))
	ok(t, p.RegisterNodes(InvalidUserModelNode{}, InvalidBookModelNode{}, InvalidUserBookNode{}))
	db := testDB(t, cfg)
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&User{}, &Book{}, &Note{}, &Account{}))
	return env{p: p, db: db}
}

// probe is a memoized function keyed by name whose result joins the
// groups it was made with; it counts its computations and returns a value
// read from the database by read.
type probe struct {
	name   string
	groups []string
	calls  atomic.Int64
	f      func(context.Context, int) (string, error)
}

// newProbe memoizes read under the key "probe:<name>", joining groups
// and nothing else.
func newProbe(t *testing.T, p *cacheme.Plugin, name string, read func(ctx context.Context) (string, error), groups ...string) *probe {
	t.Helper()
	pr := &probe{name: name, groups: groups}
	f, err := cacheme.Wrap(p, cacheme.Spec[int, string]{
		Key:    func(int) string { return "probe:" + name },
		Groups: func(int, string) []string { return pr.groups },
		Tag:    "probe",
		// A probe checks the groups a write invalidates: it joins only
		// the ones it names (capture_test.go tests capture).
		NoCapture: true,
	}, func(ctx context.Context, _ int) (string, error) {
		pr.calls.Add(1)
		return read(ctx)
	})
	ok(t, err)
	pr.f = f
	return pr
}

// get calls the probe and returns its value and how many times it has
// computed so far.
func (pr *probe) get(t *testing.T) (string, int64) {
	t.Helper()
	v, err := pr.f(bg, 0)
	if err != nil {
		t.Fatalf("probe %s: %v", pr.name, err)
	}
	return v, pr.calls.Load()
}

// mustHit asserts that the probe returns the value it has cached.
func (pr *probe) mustHit(t *testing.T, want string) {
	t.Helper()
	before := pr.calls.Load()
	v, n := pr.get(t)
	if n != before {
		t.Fatalf("probe %s (groups %v) recomputed: got %d computations; want %d (a cache hit)", pr.name, pr.groups, n, before)
	}
	if v != want {
		t.Fatalf("probe %s: got %q; want %q", pr.name, v, want)
	}
}

// mustMiss asserts that the probe recomputes and returns want.
func (pr *probe) mustMiss(t *testing.T, want string) {
	t.Helper()
	before := pr.calls.Load()
	v, n := pr.get(t)
	if n != before+1 {
		t.Fatalf("probe %s (groups %v) was not invalidated: got %d computations; want %d", pr.name, pr.groups, n, before+1)
	}
	if v != want {
		t.Fatalf("probe %s: got %q; want %q", pr.name, v, want)
	}
}

// warm computes the probe until its value is cached, and returns it. A
// computation that starts just after an invalidation of one of its groups
// (here, a write just before) may be returned but not stored (see
// settle). warm then tries again.
func (pr *probe) warm(t *testing.T) string {
	t.Helper()
	for i := 0; ; i++ {
		v, before := pr.get(t)
		if _, after := pr.get(t); after == before {
			return v
		}
		if i == 10 {
			t.Fatalf("probe %s: not cached after %d tries", pr.name, i+1)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Readers of the fixtures, used as the memoized functions' bodies.

func userName(db *gorm.DB, id uint) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var u User
		if err := db.WithContext(ctx).Unscoped().Where("id = ?", id).Limit(1).Find(&u).Error; err != nil {
			return "", err
		}
		if u.ID == 0 {
			return "<none>", nil
		}
		return u.Name, nil
	}
}

func bookName(db *gorm.DB, id uint) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var b Book
		if err := db.WithContext(ctx).Where("id = ?", id).Limit(1).Find(&b).Error; err != nil {
			return "", err
		}
		if b.ID == 0 {
			return "<none>", nil
		}
		return fmt.Sprintf("%s@%d", b.Name, b.AuthorID), nil
	}
}

// booksOfUser lists the names of the books of user id, sorted. It joins
// both tables, so that join rows a delete leaves behind on SQLite (whose
// foreign keys, and so the cascade, are off) do not count, as on
// PostgreSQL.
func booksOfUser(db *gorm.DB, id uint) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var names []string
		err := db.WithContext(ctx).Table("books").Select("books.name").
			Joins("JOIN user_books ON user_books.book_id = books.id").
			Joins("JOIN users ON users.id = user_books.user_id").
			Where("user_books.user_id = ?", id).Order("books.name").Pluck("books.name", &names).Error
		return strings.Join(names, ","), err
	}
}

// usersOfBook lists the names of the users of book id, sorted, joining
// both tables as booksOfUser does.
func usersOfBook(db *gorm.DB, id uint) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var names []string
		err := db.WithContext(ctx).Table("users").Select("users.name").
			Joins("JOIN user_books ON user_books.user_id = users.id").
			Joins("JOIN books ON books.id = user_books.book_id").
			Where("user_books.book_id = ?", id).Order("users.name").Pluck("users.name", &names).Error
		return strings.Join(names, ","), err
	}
}

// booksOfAuthor lists the names of the books of an author, sorted.
func booksOfAuthor(db *gorm.DB, author uint) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var names []string
		err := db.WithContext(ctx).Model(&Book{}).Where("author_id = ?", author).Order("name").Pluck("name", &names).Error
		return strings.Join(names, ","), err
	}
}

// tableNames lists column name of every row of a table, sorted.
func tableNames(db *gorm.DB, table, column string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var names []string
		err := db.WithContext(ctx).Table(table).Order(column).Pluck(column, &names).Error
		return strings.Join(names, ","), err
	}
}

// countRows returns the number of rows of a model (soft-deleted ones
// excluded) as a string.
func countRows(db *gorm.DB, model any) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var n int64
		err := db.WithContext(ctx).Model(model).Count(&n).Error
		return fmt.Sprint(n), err
	}
}

var _ nodes.ModelInvalidNode = InvalidUserModelNode{}
var _ nodes.M2MInvalidNode = InvalidUserBookNode{}
