package cacheme_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/m2m"
)

// Reader and Novel are the example's models: a reader has many novels and
// a novel many readers, through the join-table model Reading.
type Reader struct {
	ID     uint
	Name   string
	Novels []Novel `gorm:"many2many:readings"`
}

// CacheKey names the group of everything cached about the reader.
func (r Reader) CacheKey() string { return fmt.Sprintf("Reader:%d", r.ID) }

// Novel is a book a reader reads.
type Novel struct {
	ID    uint
	Title string
}

// Reading is the join-table model of Reader.Novels.
type Reading struct {
	ReaderID uint `gorm:"primaryKey"`
	NovelID  uint `gorm:"primaryKey"`
}

// M2MCacheKeys names the keys of both sides of a Reading: the plugin
// invalidates them whenever GORM writes the join table.
func (Reading) M2MCacheKeys() map[string]m2m.KeyFunc {
	return map[string]m2m.KeyFunc{
		"Reader": m2m.Format("Reader:%v:novels"),
		"Novel":  m2m.Format("Novel:%v:readers"),
	}
}

// The GORM plugin in one line: db.Use(cacheme.New(settings)). A write
// through GORM, here an association append, invalidates the memoized
// "novels of a reader" after its commit.
func ExamplePlugin() {
	m, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer m.Close()
	m.ClockTTL(true) // keys expire as the clock runs, as Redis's do
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	dir, err := os.MkdirTemp("", "cacheme-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	db, err := gorm.Open(sqlite.Open(filepath.Join(dir, "example.db")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		panic(err)
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}

	if err := db.Use(cacheme.New(cacheme.Settings{Redis: rdb})); err != nil {
		panic(err) // a bad configuration (no Redis, a setting out of range) fails here
	}
	if err := db.SetupJoinTable(&Reader{}, "Novels", &Reading{}); err != nil {
		panic(err)
	}
	if err := db.AutoMigrate(&Reader{}, &Novel{}, &Reading{}); err != nil {
		panic(err)
	}

	novelsOf, err := cacheme.Wrap(cacheme.Of(db), cacheme.Spec[uint, []string]{
		Key:    func(id uint) string { return fmt.Sprintf("reader:%d>novels", id) },
		Groups: func(id uint, _ []string) []string { return []string{fmt.Sprintf("Reader:%d:novels", id)} },
	}, func(ctx context.Context, id uint) ([]string, error) {
		fmt.Println("loading novels of reader", id)
		var novels []Novel
		err := db.WithContext(ctx).Model(&Reader{ID: id}).Association("Novels").Find(&novels)
		titles := []string{}
		for _, n := range novels {
			titles = append(titles, n.Title)
		}
		return titles, err
	})
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	ann, dune := Reader{Name: "ann"}, Novel{Title: "Dune"}
	db.Create(&ann)
	db.Create(&dune)
	fmt.Println(novelsOf(ctx, ann.ID)) // computes
	fmt.Println(novelsOf(ctx, ann.ID)) // cached
	if err := db.Model(&ann).Association("Novels").Append(&dune); err != nil {
		panic(err)
	}
	fmt.Println(novelsOf(ctx, ann.ID)) // invalidated by the append: computes
	// Output:
	// loading novels of reader 1
	// [] <nil>
	// [] <nil>
	// loading novels of reader 1
	// [Dune] <nil>
}

// A bad configuration is reported by db.Use, and by every call on the
// plugin, as a sentinel error.
func ExampleNew_invalid() {
	db, err := gorm.Open(sqlite.Open("file::memory:"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		panic(err)
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	err = db.Use(cacheme.New(cacheme.Settings{})) // no Redis client
	fmt.Println(err)
	// Output:
	// cacheme: no Redis client configured
}
