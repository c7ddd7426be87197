package cacheme_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/gormcacheme/cacheme"
)

// seeded is the data set every write-path case starts from:
//
//	users 1 ann, 2 bob, 3 cy
//	books 1 go (author 1), 2 sql (author 1), 3 redis (author 2)
//	join rows: book 1 - users 1, 2; book 2 - user 1; book 3 - user 3
//	notes 1 n1, 2 n2 (soft-deletable)
//	accounts 1 a@x A, 2 b@x B (email is unique)
//
// The rows are loaded fresh, without their associations.
type seeded struct {
	users    []User
	books    []Book
	notes    []Note
	accounts []Account
}

func seed(t *testing.T, db *gorm.DB) seeded {
	t.Helper()
	users := []User{{Name: "ann"}, {Name: "bob"}, {Name: "cy"}}
	ok(t, db.Create(&users).Error)
	books := []Book{
		{Name: "go", AuthorID: 1, Users: []User{users[0], users[1]}},
		{Name: "sql", AuthorID: 1, Users: []User{users[0]}},
		{Name: "redis", AuthorID: 2, Users: []User{users[2]}},
	}
	ok(t, db.Create(&books).Error)
	ok(t, db.Create(&[]Note{{Text: "n1"}, {Text: "n2"}}).Error)
	ok(t, db.Create(&[]Account{{Email: "a@x", Name: "A"}, {Email: "b@x", Name: "B"}}).Error)
	var s seeded
	ok(t, db.Order("id").Find(&s.users).Error)
	ok(t, db.Order("id").Find(&s.books).Error)
	ok(t, db.Order("id").Find(&s.notes).Error)
	ok(t, db.Order("id").Find(&s.accounts).Error)
	for i, want := range []uint{1, 2, 3} {
		equals(t, s.users[i].ID, want)
		equals(t, s.books[i].ID, want)
	}
	return s
}

// probes returns the memoized functions the write-path cases look at, by
// name: each reads something from the database and joins the groups a
// user of the plugin would give it.
func probes(t *testing.T, e env) map[string]*probe {
	t.Helper()
	db, p := e.db, e.p
	ps := map[string]*probe{}
	add := func(name string, read func(context.Context) (string, error), groups ...string) {
		ps[name] = newProbe(t, p, name, read, groups...)
	}
	for id := uint(1); id <= 5; id++ {
		add(fmt.Sprintf("user%d", id), userName(db, id), fmt.Sprintf("User:%d", id))
		add(fmt.Sprintf("u%dbooks", id), booksOfUser(db, id), fmt.Sprintf("User:%d:books", id))
		add(fmt.Sprintf("nuser%d", id), userName(db, id), InvalidUserModelNode{ID: id}.Key())
		add(fmt.Sprintf("nu%dall", id), booksOfUser(db, id), InvalidUserBookNode{User: fmt.Sprint(id), Book: "all"}.Key())
	}
	for id := uint(1); id <= 4; id++ {
		add(fmt.Sprintf("book%d", id), bookName(db, id), fmt.Sprintf("Book:%d", id))
		add(fmt.Sprintf("b%dusers", id), usersOfBook(db, id), fmt.Sprintf("Book:%d:users", id))
		add(fmt.Sprintf("nbook%d", id), bookName(db, id), InvalidBookModelNode{ID: id}.Key())
		add(fmt.Sprintf("nallb%d", id), usersOfBook(db, id), InvalidUserBookNode{User: "all", Book: fmt.Sprint(id)}.Key())
	}
	for a := uint(1); a <= 2; a++ {
		add(fmt.Sprintf("author%d", a), booksOfAuthor(db, a), fmt.Sprintf("Author:%d:books", a))
	}
	for id := uint(1); id <= 2; id++ {
		add(fmt.Sprintf("note%d", id), noteText(db, id), fmt.Sprintf("Note:%d", id))
	}
	for id := uint(1); id <= 3; id++ {
		add(fmt.Sprintf("account%d", id), accountName(db, id), fmt.Sprintf("Account:%d", id))
	}
	add("users", tableNames(db, "users", "name"), cacheme.TableGroup("users"))
	add("books", tableNames(db, "books", "name"), cacheme.TableGroup("books"))
	add("joins", countRows(db, &userBook{}), cacheme.TableGroup("user_books"))
	add("notes", countRows(db, &Note{}), cacheme.TableGroup("notes"))
	add("accounts", tableNames(db, "accounts", "name"), cacheme.TableGroup("accounts"))
	return ps
}

// userBook is the join table of User.Books and Book.Users, for counting.
type userBook struct{ UserID, BookID uint }

func (userBook) TableName() string { return "user_books" }

func noteText(db *gorm.DB, id uint) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var n Note
		if err := db.WithContext(ctx).Unscoped().Where("id = ?", id).Limit(1).Find(&n).Error; err != nil {
			return "", err
		}
		switch {
		case n.ID == 0:
			return "<none>", nil
		case n.DeletedAt.Valid:
			return "<deleted>", nil
		}
		return n.Text, nil
	}
}

func accountName(db *gorm.DB, id uint) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var a Account
		if err := db.WithContext(ctx).Where("id = ?", id).Limit(1).Find(&a).Error; err != nil {
			return "", err
		}
		if a.ID == 0 {
			return "<none>", nil
		}
		return a.Email + " " + a.Name, nil
	}
}

// countPluginReads counts the queries the plugin makes itself: they are
// the only ones run with SkipHooks in these tests.
func countPluginReads(t *testing.T, db *gorm.DB) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	ok(t, db.Callback().Query().Before("gorm:query").Register("test:count_plugin_reads", func(db *gorm.DB) {
		if s := db.Statement; s.SkipHooks {
			n.Add(1)
		}
	}))
	return &n
}

type writeCase struct {
	name string
	// setup, if set, runs before the probes are computed.
	setup func(db *gorm.DB, s seeded) error
	write func(db *gorm.DB, s seeded) error
	// miss lists the probes the write must invalidate, with the value they
	// must recompute.
	miss map[string]string
	// hit lists unrelated probes that must stay cached.
	hit []string
	// reads is how many queries the plugin adds to the write.
	reads int64
}

// writeCases are the write paths GORM offers, each with the keys it must
// invalidate and some it must leave alone.
var writeCases = []writeCase{
	{
		name:  "Create one row",
		write: func(db *gorm.DB, _ seeded) error { return db.Create(&User{Name: "dan"}).Error },
		miss:  map[string]string{"user4": "dan", "nuser4": "dan", "users": "ann,bob,cy,dan"},
		hit:   []string{"user1", "user5", "u4books", "books"},
	},
	{
		name: "Create a slice",
		write: func(db *gorm.DB, _ seeded) error {
			return db.Create(&[]User{{Name: "dan"}, {Name: "eve"}}).Error
		},
		miss: map[string]string{"user4": "dan", "user5": "eve", "users": "ann,bob,cy,dan,eve"},
		hit:  []string{"user1", "books"},
	},
	{
		name: "CreateInBatches",
		write: func(db *gorm.DB, _ seeded) error {
			return db.CreateInBatches(&[]User{{Name: "dan"}, {Name: "eve"}, {Name: "fay"}}, 2).Error
		},
		miss: map[string]string{"user4": "dan", "user5": "eve", "users": "ann,bob,cy,dan,eve,fay"},
		hit:  []string{"user1", "books"},
	},
	{
		name:  "Save inserts",
		write: func(db *gorm.DB, _ seeded) error { return db.Save(&User{Name: "dan"}).Error },
		miss:  map[string]string{"user4": "dan", "users": "ann,bob,cy,dan"},
		hit:   []string{"user1", "books"},
	},
	{
		name: "Save updates",
		write: func(db *gorm.DB, s seeded) error {
			u := s.users[0]
			u.Name = "ann2"
			return db.Save(&u).Error
		},
		miss:  map[string]string{"user1": "ann2", "nuser1": "ann2", "users": "ann2,bob,cy"},
		hit:   []string{"user2", "nuser2", "u1books", "book1", "books"},
		reads: 2,
	},
	{
		name: "Save a slice (an upsert)",
		write: func(db *gorm.DB, s seeded) error {
			us := []User{s.users[0], s.users[1]}
			us[0].Name, us[1].Name = "ann2", "bob2"
			return db.Save(&us).Error
		},
		miss:  map[string]string{"user1": "ann2", "user2": "bob2", "users": "ann2,bob2,cy"},
		hit:   []string{"user3", "u1books", "books"},
		reads: 2, // the rows before, and as the upsert left them
	},
	{
		name: "Save moves a book to another author",
		write: func(db *gorm.DB, s seeded) error {
			b := s.books[1]
			b.AuthorID = 2
			return db.Save(&b).Error
		},
		miss:  map[string]string{"book2": "sql@2", "author1": "go", "author2": "redis,sql"},
		hit:   []string{"book1", "book3", "b2users", "users"},
		reads: 2,
	},
	{
		name: "Updates on a loaded model",
		write: func(db *gorm.DB, s seeded) error {
			u := s.users[0]
			return db.Model(&u).Updates(User{Name: "ann2"}).Error
		},
		miss:  map[string]string{"user1": "ann2", "nuser1": "ann2", "users": "ann2,bob,cy"},
		hit:   []string{"user2", "u1books", "books"},
		reads: 2,
	},
	{
		name: "Updates with a map on a loaded model",
		write: func(db *gorm.DB, s seeded) error {
			u := s.users[1]
			return db.Model(&u).Updates(map[string]any{"name": "bo"}).Error
		},
		miss:  map[string]string{"user2": "bo", "users": "ann,bo,cy"},
		hit:   []string{"user1", "user3"},
		reads: 2,
	},
	{
		name: "Update on a loaded model",
		write: func(db *gorm.DB, s seeded) error {
			u := s.users[0]
			return db.Model(&u).Update("name", "ann2").Error
		},
		miss:  map[string]string{"user1": "ann2", "users": "ann2,bob,cy"},
		hit:   []string{"user2", "books"},
		reads: 2,
	},
	{
		name: "UpdateColumn on a loaded model",
		write: func(db *gorm.DB, s seeded) error {
			u := s.users[0]
			return db.Model(&u).UpdateColumn("name", "ann2").Error
		},
		miss:  map[string]string{"user1": "ann2", "users": "ann2,bob,cy"},
		hit:   []string{"user2", "books"},
		reads: 2,
	},
	{
		name: "UpdateColumns on a loaded model",
		write: func(db *gorm.DB, s seeded) error {
			u := s.users[0]
			return db.Model(&u).UpdateColumns(map[string]any{"name": "ann2"}).Error
		},
		miss:  map[string]string{"user1": "ann2", "users": "ann2,bob,cy"},
		hit:   []string{"user2", "books"},
		reads: 2,
	},
	{
		name: "Update moves a loaded book to another author",
		write: func(db *gorm.DB, s seeded) error {
			b := s.books[0]
			return db.Model(&b).Update("author_id", 2).Error
		},
		miss:  map[string]string{"book1": "go@2", "nbook1": "go@2", "author1": "sql", "author2": "go,redis", "books": "go,redis,sql"},
		hit:   []string{"book2", "book3", "u1books", "b1users"},
		reads: 2,
	},
	{
		name: "Model(&User{}).Where(...).Updates without instances",
		write: func(db *gorm.DB, _ seeded) error {
			return db.Model(&User{}).Where("name IN ?", []string{"ann", "bob"}).Updates(map[string]any{"name": gorm.Expr("name || '!'")}).Error
		},
		miss:  map[string]string{"user1": "ann!", "user2": "bob!", "nuser2": "bob!", "users": "ann!,bob!,cy"},
		hit:   []string{"user3", "nuser3", "books"},
		reads: 2,
	},
	{
		name: "Model(&Book{}).Where(...).Update moves books to another author",
		write: func(db *gorm.DB, _ seeded) error {
			return db.Model(&Book{}).Where("author_id = ?", 1).Update("author_id", 2).Error
		},
		miss:  map[string]string{"book1": "go@2", "book2": "sql@2", "author1": "", "author2": "go,redis,sql"},
		hit:   []string{"book3", "users"},
		reads: 2,
	},
	{
		name:  "Delete a loaded model",
		write: func(db *gorm.DB, s seeded) error { u := s.users[1]; return db.Delete(&u).Error },
		miss:  map[string]string{"user2": "<none>", "nuser2": "<none>", "users": "ann,cy", "b1users": "ann", "nallb1": "ann", "u2books": "", "nu2all": ""},
		hit:   []string{"user1", "u1books", "b2users", "b3users", "books"},
		reads: 2,
	},
	{
		name:  "Delete a slice of loaded models",
		write: func(db *gorm.DB, s seeded) error { us := []User{s.users[0], s.users[1]}; return db.Delete(&us).Error },
		miss: map[string]string{"user1": "<none>", "user2": "<none>", "users": "cy", "u1books": "", "u2books": "",
			"b1users": "", "b2users": ""},
		hit:   []string{"user3", "u3books", "b3users"},
		reads: 2,
	},
	{
		name:  "Delete(&User{}, id)",
		write: func(db *gorm.DB, _ seeded) error { return db.Delete(&User{}, 1).Error },
		miss:  map[string]string{"user1": "<none>", "users": "bob,cy", "u1books": "", "b1users": "bob", "b2users": "", "nallb2": ""},
		hit:   []string{"user2", "u2books", "b3users", "books"},
		reads: 2,
	},
	{
		name:  "Delete(&User{}, []uint{...})",
		write: func(db *gorm.DB, _ seeded) error { return db.Delete(&User{}, []uint{1, 2}).Error },
		miss: map[string]string{"user1": "<none>", "user2": "<none>", "users": "cy", "u1books": "", "u2books": "",
			"b1users": "", "b2users": ""},
		hit:   []string{"user3", "u3books", "b3users"},
		reads: 2,
	},
	{
		name:  "Where(...).Delete(&User{})",
		write: func(db *gorm.DB, _ seeded) error { return db.Where("name = ?", "bob").Delete(&User{}).Error },
		miss:  map[string]string{"user2": "<none>", "users": "ann,cy", "b1users": "ann", "u2books": ""},
		hit:   []string{"user1", "b2users", "u1books"},
		reads: 2,
	},
	{
		name:  "Delete a book that has join rows",
		write: func(db *gorm.DB, s seeded) error { b := s.books[0]; return db.Delete(&b).Error },
		miss: map[string]string{"book1": "<none>", "nbook1": "<none>", "author1": "sql", "books": "redis,sql",
			"b1users": "", "nallb1": "", "u1books": "sql", "nu1all": "sql", "u2books": "", "nu2all": ""},
		hit:   []string{"book2", "u3books", "b2users", "author2", "users"},
		reads: 2,
	},
	{
		name:  "soft delete",
		write: func(db *gorm.DB, s seeded) error { n := s.notes[0]; return db.Delete(&n).Error },
		miss:  map[string]string{"note1": "<deleted>", "notes": "1"},
		hit:   []string{"note2", "users"},
		reads: 1,
	},
	{
		name:  "soft delete by id",
		write: func(db *gorm.DB, _ seeded) error { return db.Delete(&Note{}, 2).Error },
		miss:  map[string]string{"note2": "<deleted>", "notes": "1"},
		hit:   []string{"note1"},
		reads: 1,
	},
	{
		name:  "Unscoped().Delete",
		write: func(db *gorm.DB, s seeded) error { n := s.notes[0]; return db.Unscoped().Delete(&n).Error },
		miss:  map[string]string{"note1": "<none>", "notes": "1"},
		hit:   []string{"note2"},
		reads: 1,
	},
	{
		name:  "Unscoped().Delete of a soft-deleted row",
		setup: func(db *gorm.DB, s seeded) error { n := s.notes[0]; return db.Delete(&n).Error },
		write: func(db *gorm.DB, _ seeded) error {
			return db.Unscoped().Where("deleted_at IS NOT NULL").Delete(&Note{}).Error
		},
		miss:  map[string]string{"note1": "<none>", "notes": "1"},
		hit:   []string{"note2"},
		reads: 1,
	},
	{
		name: "upsert UpdateAll on the primary key",
		write: func(db *gorm.DB, _ seeded) error {
			return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&User{ID: 1, Name: "ann2"}).Error
		},
		miss:  map[string]string{"user1": "ann2", "users": "ann2,bob,cy"},
		hit:   []string{"user2", "books"},
		reads: 2, // the rows before, and as the upsert left them
	},
	{
		name: "upsert UpdateAll moves a book to another author",
		write: func(db *gorm.DB, _ seeded) error {
			return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&Book{ID: 1, Name: "go", AuthorID: 2}).Error
		},
		miss:  map[string]string{"book1": "go@2", "author1": "sql", "author2": "go,redis"},
		hit:   []string{"book2", "book3", "u1books"},
		reads: 2, // the rows before, and as the upsert left them
	},
	{
		name: "upsert DoUpdates on a unique column",
		write: func(db *gorm.DB, _ seeded) error {
			return db.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "email"}},
				DoUpdates: clause.AssignmentColumns([]string{"name"}),
			}).Create(&Account{Email: "a@x", Name: "A2"}).Error
		},
		miss:  map[string]string{"account1": "a@x A2", "accounts": "A2,B"},
		hit:   []string{"account2", "users"},
		reads: 2, // the rows before, and as the upsert left them
	},
	{
		name: "upsert DoUpdates with a literal value",
		write: func(db *gorm.DB, _ seeded) error {
			// The row as written says author 1; the database ends with 2.
			return db.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "id"}},
				DoUpdates: clause.Assignments(map[string]any{"author_id": 2}),
			}).Create(&Book{ID: 1, Name: "go", AuthorID: 1}).Error
		},
		miss:  map[string]string{"book1": "go@2", "author1": "sql", "author2": "go,redis"},
		hit:   []string{"book2", "book3", "u1books"},
		reads: 2,
	},
	{
		name: "upsert DoNothing",
		write: func(db *gorm.DB, _ seeded) error {
			return db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Account{Email: "c@x", Name: "C"}).Error
		},
		miss: map[string]string{"accounts": "A,B,C", "account3": "c@x C"},
		hit:  []string{"account1", "account2"},
	},
	{
		name: "Append from the book side",
		write: func(db *gorm.DB, s seeded) error {
			b, u := s.books[2], s.users[0]
			return db.Model(&b).Association("Users").Append(&u)
		},
		miss: map[string]string{"b3users": "ann,cy", "u1books": "go,redis,sql", "nallb3": "ann,cy", "nu1all": "go,redis,sql",
			"joins": "5"},
		hit:   []string{"u2books", "u3books", "b1users", "b2users", "nu3all", "nallb1", "user2"},
		reads: 1,
	},
	{
		name: "Append from the user side",
		write: func(db *gorm.DB, s seeded) error {
			u, b := s.users[2], s.books[0]
			return db.Model(&u).Association("Books").Append(&b)
		},
		miss: map[string]string{"u3books": "go,redis", "b1users": "ann,bob,cy", "nu3all": "go,redis", "nallb1": "ann,bob,cy",
			"joins": "5"},
		hit:   []string{"u1books", "u2books", "b2users", "b3users", "nallb3", "user1"},
		reads: 1,
	},
	{
		name: "Delete association from the book side",
		write: func(db *gorm.DB, s seeded) error {
			b, u := s.books[0], s.users[1]
			return db.Model(&b).Association("Users").Delete(&u)
		},
		miss:  map[string]string{"b1users": "ann", "u2books": "", "nallb1": "ann", "nu2all": "", "joins": "3"},
		hit:   []string{"u1books", "b2users", "nu1all", "user2", "book1"},
		reads: 1,
	},
	{
		name: "Delete association from the user side",
		write: func(db *gorm.DB, s seeded) error {
			u, b := s.users[0], s.books[1]
			return db.Model(&u).Association("Books").Delete(&b)
		},
		miss:  map[string]string{"u1books": "go", "b2users": "", "nu1all": "go", "nallb2": "", "joins": "3"},
		hit:   []string{"b1users", "u2books", "nallb1", "user1", "book2"},
		reads: 1,
	},
	{
		name: "Replace from the book side",
		write: func(db *gorm.DB, s seeded) error {
			b, u := s.books[0], s.users[2]
			return db.Model(&b).Association("Users").Replace(&u)
		},
		miss: map[string]string{"b1users": "cy", "u1books": "sql", "u2books": "", "u3books": "go,redis",
			"nallb1": "cy", "nu1all": "sql", "nu2all": "", "nu3all": "go,redis", "joins": "3"},
		hit:   []string{"b2users", "b3users", "nallb2"},
		reads: 2,
	},
	{
		name: "Replace from the user side",
		write: func(db *gorm.DB, s seeded) error {
			u, b := s.users[0], s.books[2]
			return db.Model(&u).Association("Books").Replace(&b)
		},
		miss: map[string]string{"u1books": "redis", "b1users": "bob", "b2users": "", "b3users": "ann,cy",
			"nu1all": "redis", "nallb1": "bob", "nallb2": "", "nallb3": "ann,cy", "joins": "3"},
		hit:   []string{"u2books", "u3books", "nu2all"},
		reads: 2,
	},
	{
		name: "Clear from the book side",
		write: func(db *gorm.DB, s seeded) error {
			b := s.books[0]
			return db.Model(&b).Association("Users").Clear()
		},
		miss:  map[string]string{"b1users": "", "u1books": "sql", "u2books": "", "nallb1": "", "nu1all": "sql", "nu2all": "", "joins": "2"},
		hit:   []string{"b2users", "u3books", "user1", "book1"},
		reads: 1,
	},
	{
		name: "Clear from the user side",
		write: func(db *gorm.DB, s seeded) error {
			u := s.users[0]
			return db.Model(&u).Association("Books").Clear()
		},
		miss:  map[string]string{"u1books": "", "b1users": "bob", "b2users": "", "nu1all": "", "nallb1": "bob", "nallb2": "", "joins": "2"},
		hit:   []string{"u2books", "b3users", "user1", "book1"},
		reads: 1,
	},
	{
		name: "Create a book with its users",
		write: func(db *gorm.DB, s seeded) error {
			return db.Create(&Book{Name: "ml", AuthorID: 2, Users: []User{s.users[1], {Name: "dan"}}}).Error
		},
		miss: map[string]string{"book4": "ml@2", "b4users": "bob,dan", "nallb4": "bob,dan", "u2books": "go,ml", "u4books": "ml",
			"user4": "dan", "author2": "ml,redis", "books": "go,ml,redis,sql", "users": "ann,bob,cy,dan", "joins": "6"},
		hit: []string{"u1books", "u3books", "b1users", "author1"},
	},
	{
		name: "Create a user with their books",
		write: func(db *gorm.DB, s seeded) error {
			return db.Create(&User{Name: "dan", Books: []Book{s.books[2]}}).Error
		},
		miss: map[string]string{"user4": "dan", "u4books": "redis", "nu4all": "redis", "b3users": "cy,dan", "nallb3": "cy,dan",
			"joins": "5"},
		hit: []string{"u3books", "b1users", "user1"},
	},
}

// TestWritePaths checks each write path: a memoized function returns its
// cached value, the write happens, the next call recomputes the new value,
// and unrelated entries stay cached. It also checks how many queries the
// plugin adds to each write, and logs what else the write invalidated.
func TestWritePaths(t *testing.T) {
	for _, tc := range writeCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runWriteCase(t, gorm.Config{}, tc)
		})
	}
}

// runWriteCase runs one write-path case on a fresh database opened with
// cfg.
func runWriteCase(t *testing.T, cfg gorm.Config, tc writeCase) {
	t.Helper()
	e := newEnv(t, cacheme.Settings{}, cfg)
	s := seed(t, e.db)
	if tc.setup != nil {
		ok(t, tc.setup(e.db, s))
	}
	ps := probes(t, e)
	for name := range tc.miss {
		if ps[name] == nil {
			t.Fatalf("no probe %q", name)
		}
	}
	for _, name := range tc.hit {
		if ps[name] == nil {
			t.Fatalf("no probe %q", name)
		}
		if _, dup := tc.miss[name]; dup {
			t.Fatalf("probe %q is both a miss and a hit", name)
		}
	}
	before := map[string]string{}
	for name, pr := range ps {
		before[name] = pr.warm(t)
	}
	reads := countPluginReads(t, e.db)
	ok(t, tc.write(e.db, s))
	if got := reads.Load(); got != tc.reads {
		t.Errorf("plugin queries: got %v; want %v", got, tc.reads)
	}
	for name, want := range tc.miss {
		ps[name].mustMiss(t, want)
	}
	for _, name := range tc.hit {
		ps[name].mustHit(t, before[name])
	}
	var extra []string
	for name, pr := range ps {
		if _, asserted := tc.miss[name]; asserted {
			continue
		}
		n := pr.calls.Load()
		if _, c := pr.get(t); c != n {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	t.Logf("also invalidated: %s", strings.Join(extra, " "))
}

// TestTableGroup checks that any write that changes rows of a table
// invalidates its TableGroup, whichever rows it touches, and no other
// table's; one that changes none invalidates nothing.
func TestTableGroup(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	users := newProbe(t, e.p, "users", countRows(e.db, &User{}), cacheme.TableGroup("users"))
	books := newProbe(t, e.p, "books", countRows(e.db, &Book{}), cacheme.TableGroup("books"))
	writes := []struct {
		name  string
		write func(db *gorm.DB) error
		users string // the new count of users
	}{
		{"create", func(db *gorm.DB) error { return db.Create(&User{Name: "dan"}).Error }, "4"},
		{"update", func(db *gorm.DB) error {
			return db.Model(&User{}).Where("name = ?", "dan").Update("name", "dan2").Error
		}, "4"},
		{"delete", func(db *gorm.DB) error { return db.Where("name = ?", "dan2").Delete(&User{}).Error }, "3"},
		{"global update", func(db *gorm.DB) error {
			return db.Session(&gorm.Session{AllowGlobalUpdate: true}).Model(&User{}).Update("name", gorm.Expr("name")).Error
		}, "3"},
		{"create from a map", func(db *gorm.DB) error { return db.Model(&User{}).Create(map[string]any{"Name": "eve"}).Error }, "4"},
		// Without a model, the rows' keys are unknown: only the table's
		// group is invalidated.
		{"Table create", func(db *gorm.DB) error { return db.Table("users").Create(map[string]any{"name": "fay"}).Error }, "5"},
		{"Table update", func(db *gorm.DB) error {
			return db.Table("users").Where("name = ?", "fay").Update("name", "fay2").Error
		}, "5"},
		{"Table delete", func(db *gorm.DB) error { return db.Table("users").Where("name = ?", "fay2").Delete(nil).Error }, "4"},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			users.warm(t)
			nb := books.warm(t)
			ok(t, w.write(e.db))
			users.mustMiss(t, w.users)
			books.mustHit(t, nb)
		})
	}
	t.Run("update matching no row", func(t *testing.T) {
		nu := users.warm(t)
		ok(t, e.db.Model(&User{}).Where("name = ?", "nobody").Update("name", "x").Error)
		users.mustHit(t, nu)
	})
}

// TestNoPluginStatementsWithoutSchema checks that statements the plugin
// cannot attribute to a model (raw SQL) leave the cache alone and do not
// fail.
func TestRawExecIsNotSeen(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	u1 := newProbe(t, e.p, "user1", userName(e.db, 1), "User:1")
	u1.warm(t)
	ok(t, e.db.Exec("UPDATE users SET name = ? WHERE id = ?", "raw", 1).Error)
	u1.mustHit(t, "ann")
	_, err := e.p.InvalidateModels(bg, &User{ID: 1})
	ok(t, err)
	u1.mustMiss(t, "raw")
}

// TestTableAlias checks that a write through an aliased table still works
// and invalidates the row's keys.
func TestTableAlias(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	pr := newProbe(t, e.p, "user1", userName(e.db, 1), "User:1")
	pr.warm(t)
	ok(t, e.db.Table("users AS u").Where("u.id = ?", 1).Model(&User{}).Update("name", "ann2").Error)
	pr.mustMiss(t, "ann2")
}

// UserBook is an explicit model of the user_books join table.
type UserBook struct {
	UserID, BookID uint
}

// TestUpdateMovesKeys checks updates whose new rows cannot be found by
// their old primary key: a join row moved to another user, and a row whose
// primary key changes. The new side's keys are invalidated too.
func TestUpdateMovesKeys(t *testing.T) {
	t.Run("join row moved to another user", func(t *testing.T) {
		e := newEnv(t, cacheme.Settings{}, gorm.Config{})
		seed(t, e.db)
		u2 := newProbe(t, e.p, "u2books", booksOfUser(e.db, 2), "User:2:books")
		u3 := newProbe(t, e.p, "u3books", booksOfUser(e.db, 3), "User:3:books")
		u2was := u2.warm(t)
		before := u3.warm(t)
		// Book 2 ("sql") moves from user 1 to user 3.
		ok(t, e.db.Model(&UserBook{}).Where("book_id = ? AND user_id = ?", 2, 1).Update("user_id", 3).Error)
		after, _ := u3.get(t)
		if after == before {
			t.Fatalf("books of user 3 still %q after book 2 moved to them", after)
		}
		u2.mustHit(t, u2was)
	})
	t.Run("primary key changed", func(t *testing.T) {
		e := newEnv(t, cacheme.Settings{}, gorm.Config{})
		u := User{Name: "dan"}
		ok(t, e.db.Create(&u).Error)
		p99 := newProbe(t, e.p, "user99", userName(e.db, 99), "User:99")
		p99.warm(t)
		ok(t, e.db.Model(&User{}).Where("id = ?", u.ID).Update("id", 99).Error)
		p99.mustMiss(t, "dan")
	})
}

// TestUpdatesWithStructValue checks Updates with a struct value (not a
// pointer) whose type has slice fields: the plugin reads it without
// comparing it, and invalidates the row.
func TestUpdatesWithStructValue(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	pr := newProbe(t, e.p, "user1", userName(e.db, 1), "User:1")
	pr.warm(t)
	ok(t, e.db.Model(&User{ID: 1}).Updates(User{Name: "ann2"}).Error)
	pr.mustMiss(t, "ann2")
}

// TestModelDelete checks db.Model(&u).Delete(&User{}): GORM deletes u by
// the Model's primary key, and so u's keys and its partners' are
// invalidated.
func TestModelDelete(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	s := seed(t, e.db)
	pr := newProbe(t, e.p, "user2", userName(e.db, 2), "User:2")
	pb := newProbe(t, e.p, "b1users", usersOfBook(e.db, 1), "Book:1:users")
	pr.warm(t)
	pb.warm(t)
	u := s.users[1]
	res := e.db.Model(&u).Delete(&User{})
	ok(t, res.Error)
	equals(t, res.RowsAffected, int64(1))
	pr.mustMiss(t, "<none>")
	pb.mustMiss(t, "ann")
}

// TestWrittenTable checks that the table group of the table a statement
// writes is invalidated, also when it is not the model's table.
func TestWrittenTable(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	ddl := "CREATE TABLE archive (id integer PRIMARY KEY, name text, deleted_at timestamp)"
	if e.db.Dialector.Name() == "postgres" {
		ddl = "CREATE TABLE archive (id serial PRIMARY KEY, name text, deleted_at timestamp)"
	}
	ok(t, e.db.Exec(ddl).Error)
	pr := newProbe(t, e.p, "archive", tableNames(e.db, "archive", "name"), cacheme.TableGroup("archive"))
	pr.warm(t)
	ok(t, e.db.Table("archive").Create(&User{Name: "old"}).Error)
	pr.mustMiss(t, "old")
}

// TestCreateFromMap checks Model(&User{}).Create(map): the new row's key is
// invalidated (GORM writes its primary key back into the map).
func TestCreateFromMap(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	pr := newProbe(t, e.p, "user4", userName(e.db, 4), "User:4")
	pr.warm(t)
	ok(t, e.db.Model(&User{}).Create(map[string]any{"Name": "dan"}).Error)
	pr.mustMiss(t, "dan")
}

// HookUser fails its AfterSave hook for the name "bad", after the row is
// written.
type HookUser struct {
	ID   uint
	Name string
}

func (u HookUser) CacheKey() string { return fmt.Sprintf("HookUser:%d", u.ID) }

func (u *HookUser) AfterSave(*gorm.DB) error {
	if u.Name == "bad" {
		return errors.New("audit failed")
	}
	return nil
}

// TestAfterHookError checks that a model's After* hook error does not lose
// the invalidation of a write that stays committed: without a transaction,
// and in a db.Transaction that ignores the error and commits.
func TestAfterHookError(t *testing.T) {
	run := func(t *testing.T, cfg gorm.Config, write func(db *gorm.DB, u *HookUser) error) {
		p, _ := newPlugin(t, cacheme.Settings{})
		db := testDB(t, cfg)
		ok(t, db.Use(p))
		ok(t, db.AutoMigrate(&HookUser{}))
		u := HookUser{Name: "a"}
		ok(t, db.Create(&u).Error)
		pr := newProbe(t, p, "hook", func(ctx context.Context) (string, error) {
			var x HookUser
			err := db.WithContext(ctx).First(&x, u.ID).Error
			return x.Name, err
		}, fmt.Sprintf("HookUser:%d", u.ID))
		pr.warm(t)
		_ = write(db, &u)
		var x HookUser
		ok(t, db.First(&x, u.ID).Error)
		equals(t, x.Name, "bad") // committed despite the hook
		pr.mustMiss(t, "bad")
	}
	t.Run("SkipDefaultTransaction", func(t *testing.T) {
		run(t, gorm.Config{SkipDefaultTransaction: true}, func(db *gorm.DB, u *HookUser) error {
			return db.Model(u).Update("name", "bad").Error
		})
	})
	t.Run("db.Transaction ignoring the error", func(t *testing.T) {
		run(t, gorm.Config{}, func(db *gorm.DB, u *HookUser) error {
			return db.Transaction(func(tx *gorm.DB) error {
				_ = tx.Model(u).Update("name", "bad").Error
				return nil
			})
		})
	})
}

// TestBulkWrites checks bulk updates and deletes of more rows than one IN
// list of the plugin carries (maxParams, 1000, well under SQLite's 32766 and
// PostgreSQL's 65535 parameters): the plugin reads them in chunks, the
// writes succeed, and the last row's key is invalidated too.
func TestBulkWrites(t *testing.T) {
	rdb, m := testRedis(t)
	if m != nil {
		// Thousands of keys: miniredis's exact clock would cost every
		// command a pass over them, and nothing here needs expiry.
		m.ClockTTL(false)
	}
	e := newEnvOn(t, newPluginOn(t, rdb, cacheme.Settings{FlushTimeout: time.Minute}), gorm.Config{})
	const n = 2500
	if e.db.Dialector.Name() == "sqlite" {
		ok(t, e.db.Exec("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?) INSERT INTO users(name) SELECT 'u'||x FROM c", n).Error)
	} else {
		ok(t, e.db.Exec("INSERT INTO users(name) SELECT 'u'||x FROM generate_series(1, ?) x", n).Error)
	}
	last := newProbe(t, e.p, "last", userName(e.db, n), fmt.Sprintf("User:%d", n))
	last.warm(t)
	reads := countPluginReads(t, e.db)
	ok(t, e.db.Model(&User{}).Where("name LIKE ?", "u%").Update("name", gorm.Expr("name || '!'")).Error)
	// One read before the update, three chunks of at most 1000 after.
	equals(t, reads.Load(), int64(4))
	last.mustMiss(t, fmt.Sprintf("u%d!", n))
	reads.Store(0)
	ok(t, e.db.Where("name LIKE ?", "u%").Delete(&User{}).Error)
	// One read of the rows, then their join rows in chunks of 500.
	equals(t, reads.Load(), int64(6))
	last.mustMiss(t, "<none>")
}

// PanicKey's CacheKey panics for the name "boom".
type PanicKey struct {
	ID   uint
	Name string
}

func (k PanicKey) CacheKey() string {
	if k.Name == "boom" {
		panic("CacheKey exploded")
	}
	return fmt.Sprintf("PanicKey:%d", k.ID)
}

// A panic in user code the plugin runs during a write (here CacheKey, on
// the row as the update leaves it) becomes the statement's error: GORM
// rolls the transaction back, and no connection or row lock is left
// behind, so the next write to the row goes through.
func TestPanicInCacheKey(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&PanicKey{}))
	row := PanicKey{Name: "ok"}
	ok(t, db.Create(&row).Error)
	for range 3 {
		err := db.Model(&PanicKey{}).Where("id = ?", row.ID).Update("name", "boom").Error
		isErr(t, err, cacheme.ErrPanic)
	}
	var name string
	ok(t, db.Raw("SELECT name FROM panic_keys WHERE id = ?", row.ID).Scan(&name).Error)
	equals(t, name, "ok") // rolled back
	sqlDB, err := db.DB()
	ok(t, err)
	equals(t, sqlDB.Stats().InUse, 0)
	done := make(chan error, 1)
	go func() { done <- db.Model(&PanicKey{}).Where("id = ?", row.ID).Update("name", "fine").Error }()
	select {
	case err := <-done:
		ok(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("a write to the row hangs: its lock leaked")
	}
}

// Wallet is a user's balance, for UPDATE … FROM.
type Wallet struct {
	ID      uint
	UserID  uint
	Balance int
}

// UPDATE … FROM (GORM's own suite's case): the plugin's read of the rows
// mirrors the FROM tables, so the write runs as it does without the
// plugin, and invalidates the rows it changed.
func TestUpdateFrom(t *testing.T) {
	rec := &errRecorder{}
	e := newEnv(t, cacheme.Settings{ErrorHook: rec.Hook}, gorm.Config{})
	seed(t, e.db)
	ok(t, e.db.AutoMigrate(&Wallet{}))
	ok(t, e.db.Create(&Wallet{UserID: 1, Balance: 10}).Error)
	ok(t, e.db.Create(&Wallet{UserID: 2, Balance: 1}).Error)
	u1 := newProbe(t, e.p, "user1", userName(e.db, 1), "User:1")
	u2 := newProbe(t, e.p, "user2", userName(e.db, 2), "User:2")
	u1.warm(t)
	before := u2.warm(t)
	res := e.db.Model(&User{}).Clauses(clause.From{Tables: []clause.Table{{Name: "wallets"}}}).
		Where("wallets.user_id = users.id AND wallets.balance > ?", 5).Update("name", "rich")
	ok(t, res.Error)
	equals(t, res.RowsAffected, int64(1))
	u1.mustMiss(t, "rich")
	u2.mustHit(t, before)
	if errs := rec.All(); len(errs) > 0 {
		t.Fatalf("reported %v; want nothing", errs)
	}
}

// Round trips of a GORM write after its commit, whatever how many cached
// entries depend on the row: one to read the table's schemes, and the
// invalidation's (one when its groups are empty, three when they have
// members: mark the sets, mark the entries, drop the members).
func TestWriteRoundTrips(t *testing.T) {
	rdb, _ := testRedis(t)
	cc := &commandCounter{}
	rdb.AddHook(cc)
	p := newPluginOn(t, rdb, cacheme.Settings{})
	e := newEnvOn(t, p, gorm.Config{})
	seed(t, e.db)
	rename := func(id int, name string) func() {
		return func() {
			ok(t, e.db.Model(&User{ID: uint(id)}).Update("name", name).Error)
		}
	}
	// dependents caches n reads that user id's row satisfies: queries of
	// the table by id and by name, and memoized functions in its group.
	dependents := func(id, n int) {
		for i := range n {
			var u User
			ok(t, e.db.Clauses(cacheme.Cached{}).Where("id = ? AND ? > 0", id, i+1).First(&u).Error)
			pr := newProbe(t, p, fmt.Sprintf("dep%d-%d", id, i), userName(e.db, uint(id)), fmt.Sprintf("User:%d", id))
			pr.warm(t)
		}
	}
	trips := func(what string, do func()) int {
		t.Helper()
		settle()
		cc.reset()
		do()
		cmds, rt := cc.get()
		t.Logf("%s: %d round trips %v", what, rt, cmds)
		for _, c := range cmds {
			equals(t, c, "evalsha")
		}
		return rt
	}
	// Warm-up: every script runs once.
	dependents(3, 1)
	rename(3, "cy2")()
	rename(3, "cy3")()

	n0 := trips("0 dependents", rename(2, "bob2"))
	dependents(1, 50)
	n50 := trips("100 dependents", rename(1, "ann2"))
	equals(t, n0, 2)
	equals(t, n50, 4)
}
