package cacheme_test

import (
	"context"
	"fmt"
	"testing"

	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/m2m"
)

type User struct {
	ID    uint
	Name  string
	Books []Book `gorm:"many2many:user_books;constraint:OnDelete:CASCADE"`
}

func (u User) CacheKey() string { return fmt.Sprintf("User:%d", u.ID) }

type Book struct {
	ID       uint
	Name     string
	AuthorID uint
	Users    []User `gorm:"many2many:user_books;constraint:OnDelete:CASCADE"`
}

func (b Book) CacheKey() []string {
	return []string{fmt.Sprintf("Book:%d", b.ID), fmt.Sprintf("Author:%d:books", b.AuthorID)}
}

func idKeys(format string) m2m.KeyFunc {
	return func(ids []any) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = fmt.Sprintf(format, id)
		}
		return out
	}
}

func TestGormSmoke(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ok(t, p.RegisterM2M(m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
		"Book": idKeys("Book:%v:users"), "User": idKeys("User:%v:books"),
	}}))
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&User{}, &Book{}))

	booksOf, err := cacheme.Wrap(p, cacheme.Spec[uint, []string]{
		Key:         func(id uint) string { return fmt.Sprintf("user:%d:books", id) },
		InvalidKeys: func(id uint, _ []string) []string { return []string{fmt.Sprintf("User:%d:books", id)} },
	}, func(ctx context.Context, id uint) ([]string, error) {
		var u User
		if err := db.WithContext(ctx).Preload("Books").First(&u, id).Error; err != nil {
			return nil, err
		}
		names := []string{}
		for _, b := range u.Books {
			names = append(names, b.Name)
		}
		return names, nil
	})
	ok(t, err)
	u := User{Name: "u1"}
	ok(t, db.Create(&u).Error)
	b1, b2 := Book{Name: "b1"}, Book{Name: "b2"}
	ok(t, db.Create(&b1).Error)
	ok(t, db.Create(&b2).Error)
	got, err := booksOf(bg, u.ID)
	ok(t, err)
	equals(t, len(got), 0)
	ok(t, db.Model(&u).Association("Books").Append(&b1, &b2))
	got, err = booksOf(bg, u.ID)
	ok(t, err)
	equals(t, len(got), 2)
	ok(t, db.Model(&b1).Association("Users").Delete(&u))
	got, err = booksOf(bg, u.ID)
	ok(t, err)
	equals(t, len(got), 1)
	ok(t, db.Delete(&Book{}, b2.ID).Error)
	got, err = booksOf(bg, u.ID)
	ok(t, err)
	equals(t, len(got), 0)
	t.Log(p.Stats().Total)
}
