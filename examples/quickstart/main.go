// Command quickstart is the README's Quick start: GORM reads cached with a
// clause, a memoized function, and writes that invalidate exactly what
// they change, after their COMMIT.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

type User struct {
	ID    uint
	Name  string
	Books []Book `gorm:"many2many:user_books"`
}

type Book struct {
	ID    uint
	Title string
}

func main() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"}) // any redis.UniversalClient, Cluster included
	db, err := gorm.Open(sqlite.Open("quickstart.db"), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := run(context.Background(), os.Stdout, db, rdb); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer, db *gorm.DB, rdb redis.UniversalClient) error {
	// The plugin, in one line; a bad configuration fails here.
	if err := db.Use(cacheme.New(cacheme.Settings{Redis: rdb})); err != nil {
		return err
	}
	if err := db.AutoMigrate(&User{}, &Book{}); err != nil {
		return err
	}
	ann := User{Name: "ann", Books: []Book{{Title: "Dune"}, {Title: "Emma"}}}
	if err := db.Create(&ann).Error; err != nil {
		return err
	}
	p := cacheme.Of(db)

	// 1. The query cache: add the clause to a read (or register a model
	// with p.CacheQueries). A hit runs no SQL.
	bookByID := func(id uint) string {
		var b Book
		db.Clauses(cacheme.Cached{TTL: time.Hour}).First(&b, id)
		return b.Title
	}
	fmt.Fprintln(out, bookByID(1), bookByID(2)) // the database
	fmt.Fprintln(out, bookByID(1), bookByID(2)) // Redis
	db.Model(&Book{ID: 1}).Update("title", "Dune Messiah")
	fmt.Fprintln(out, bookByID(1), bookByID(2)) // book 1 was invalidated, book 2 was not

	// 2. A memoized function: the groups of what its GORM reads depend on
	// (here the user's join rows and the books) are captured.
	booksOf, err := cacheme.Wrap(p, cacheme.Spec[uint, []string]{
		Key: func(id uint) string { return fmt.Sprintf("user:%d>books", id) },
	}, func(ctx context.Context, id uint) ([]string, error) {
		var books []Book
		err := db.WithContext(ctx).Model(&User{ID: id}).Order("title").Association("Books").Find(&books)
		titles := make([]string, len(books))
		for i, b := range books {
			titles[i] = b.Title
		}
		return titles, err
	})
	if err != nil {
		return err
	}
	show := func() {
		titles, err := booksOf(ctx, ann.ID)
		fmt.Fprintln(out, titles, err)
	}
	show() // computes
	show() // cached
	db.Model(&Book{ID: 2}).Update("title", "Persuasion")
	show() // a book was renamed: computes
	db.Model(&ann).Association("Books").Append(&Book{Title: "Ulysses"})
	show() // a book was added: computes

	st := p.Stats().Total
	fmt.Fprintf(out, "%d hits, %d misses\n", st.Hits, st.Misses)
	return p.Close(ctx)
}
