package relation_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
	"gorm.io/gorm/utils/tests"

	"github.com/gormcacheme/cacheme/internal/relation"
	"github.com/gormcacheme/cacheme/m2m"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left running
// after them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type User struct {
	ID    uint
	Name  string
	Books []Book `gorm:"many2many:user_books"`
}

type Book struct {
	ID       uint
	AuthorID uint
	Users    []User `gorm:"many2many:user_books"`
}

// Author has many books: not a many2many relation.
type Author struct {
	ID    uint
	Books []Book `gorm:"foreignKey:AuthorID"`
}

// Post names its join table's columns itself.
type Post struct {
	ID   uint
	Tags []Tag `gorm:"many2many:post_tags;joinForeignKey:PostRef;joinReferences:TagRef"`
}

type Tag struct{ ID uint }

// Shelf has a composite primary key.
type Shelf struct {
	Room  string `gorm:"primaryKey"`
	Row   int    `gorm:"primaryKey"`
	Books []Book `gorm:"many2many:shelf_books"`
}

// Person is on both sides of a relation.
type Person struct {
	ID      uint
	Friends []Person `gorm:"many2many:friendships"`
}

// UserBook is a declared struct for user_books rows.
type UserBook struct {
	UserID, BookID uint
}

func openDB(t *testing.T) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(tests.DummyDialector{}, &gorm.Config{})
	if err != nil {
		t.Fatalf("gorm.Open: %v", err)
	}
	return db
}

func parse(t *testing.T, db *gorm.DB, v any) *schema.Schema {
	t.Helper()
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(v); err != nil {
		t.Fatalf("parse %T: %v", v, err)
	}
	return stmt.Schema
}

func TestResolveErrors(t *testing.T) {
	db := openDB(t)
	both := map[string]m2m.KeyFunc{"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books")}
	tests := []struct {
		name  string
		table m2m.Table
	}{
		{"no model", m2m.Table{Field: "Users", Keys: both}},
		{"no field", m2m.Table{Model: &Book{}, Keys: both}},
		{"not a model", m2m.Table{Model: "Book", Field: "Users", Keys: both}},
		{"unknown field", m2m.Table{Model: &Book{}, Field: "Readers", Keys: both}},
		{"field that is not a relation", m2m.Table{Model: &Book{}, Field: "AuthorID", Keys: both}},
		{"has-many field", m2m.Table{Model: &Author{}, Field: "Books", Keys: map[string]m2m.KeyFunc{
			"Author": m2m.Format("a%v"), "Book": m2m.Format("b%v"),
		}}},
		{"no Keys", m2m.Table{Model: &Book{}, Field: "Users"}},
		{"missing Keys entry for the related side", m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
			"Book": m2m.Format("Book:%v:users"),
		}}},
		{"missing Keys entry for the owner side", m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
			"User": m2m.Format("User:%v:books"),
		}}},
		{"nil key function", m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
			"Book": m2m.Format("Book:%v:users"), "User": nil,
		}}},
		{"Keys entry of another model", m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
			"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books"), "Author": m2m.Format("a%v"),
		}}},
		{"composite primary key", m2m.Table{Model: &Shelf{}, Field: "Books", Keys: map[string]m2m.KeyFunc{
			"Shelf": m2m.Format("Shelf:%v:books"), "Book": m2m.Format("Book:%v:shelves"),
		}}},
		{"Keys entry by table name", m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
			"books": m2m.Format("Book:%v:users"), "users": m2m.Format("User:%v:books"),
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rel, err := relation.Resolve(db, tt.table)
			if !errors.Is(err, m2m.ErrInvalid) {
				t.Fatalf("got %v, %v; want an error wrapping m2m.ErrInvalid", rel, err)
			}
			if rel != nil {
				t.Fatalf("got relation %+v with error %v; want nil", rel, err)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	db := openDB(t)
	tests := []struct {
		name                 string
		table                m2m.Table
		join, field          string
		owner, related       string // side models
		ownerCol, relatedCol string
		ownerKey, relatedKey string // keys of id 7
		ownerTable, relTable string
	}{
		{"book side", m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
			"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books"),
		}}, "user_books", "Users", "Book", "User", "book_id", "user_id", "Book:7:users", "User:7:books", "books", "users"},
		{"user side", m2m.Table{Model: User{}, Field: "Books", Keys: map[string]m2m.KeyFunc{
			"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books"),
		}}, "user_books", "Books", "User", "Book", "user_id", "book_id", "User:7:books", "Book:7:users", "users", "books"},
		{"named join columns", m2m.Table{Model: &Post{}, Field: "Tags", Keys: map[string]m2m.KeyFunc{
			"Post": m2m.Format("Post:%v:tags"), "Tag": m2m.Format("Tag:%v:posts"),
		}}, "post_tags", "Tags", "Post", "Tag", "post_ref", "tag_ref", "Post:7:tags", "Tag:7:posts", "posts", "tags"},
		{"self-referencing", m2m.Table{Model: &Person{}, Field: "Friends", Keys: map[string]m2m.KeyFunc{
			"Person": m2m.Format("Person:%v:friends"),
		}}, "friendships", "Friends", "Person", "Person", "person_id", "friend_id", "Person:7:friends", "Person:7:friends", "people", "people"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rel, err := relation.Resolve(db, tt.table)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			checks := []struct{ what, got, want string }{
				{"JoinTable", rel.JoinTable, tt.join},
				{"Field", rel.Field, tt.field},
				{"Owner.Model", rel.Owner.Model, tt.owner},
				{"Related.Model", rel.Related.Model, tt.related},
				{"Owner.Column", rel.Owner.Column, tt.ownerCol},
				{"Related.Column", rel.Related.Column, tt.relatedCol},
				{"Owner.Schema.Table", rel.Owner.Schema.Table, tt.ownerTable},
				{"Related.Schema.Table", rel.Related.Schema.Table, tt.relTable},
				{"Owner.Keys", rel.Owner.Keys([]any{7})[0], tt.ownerKey},
				{"Related.Keys", rel.Related.Keys([]any{7})[0], tt.relatedKey},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: got %v; want %v", c.what, c.got, c.want)
				}
			}
			sides := rel.Sides()
			if sides[0].Model != tt.owner || sides[1].Model != tt.related {
				t.Errorf("Sides: got %v, %v; want %v, %v", sides[0].Model, sides[1].Model, tt.owner, tt.related)
			}
		})
	}
}

func TestPairsOf(t *testing.T) {
	db := openDB(t)
	rel, err := relation.Resolve(db, m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
		"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books"),
	}})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	// GORM's own join-table schema, with rows of its generated type.
	join := parse(t, db, &Book{}).Relationships.Relations["Users"].JoinTable
	joinRow := func(book, user uint) reflect.Value {
		v := reflect.New(join.ModelType).Elem()
		if err := join.LookUpField("book_id").Set(t.Context(), v, book); err != nil {
			t.Fatal(err)
		}
		if err := join.LookUpField("user_id").Set(t.Context(), v, user); err != nil {
			t.Fatal(err)
		}
		return v
	}
	joinRows := reflect.MakeSlice(reflect.SliceOf(join.ModelType), 0, 2)
	joinRows = reflect.Append(joinRows, joinRow(1, 10), joinRow(2, 20))

	declared := parse(t, db, &UserBook{})
	other := parse(t, db, &Author{})
	tests := []struct {
		name string
		sch  *schema.Schema
		v    reflect.Value
		want []relation.Pair
	}{
		{"gorm join rows", join, joinRows, []relation.Pair{{Owner: uint(1), Related: uint(10)}, {Owner: uint(2), Related: uint(20)}}},
		{"one gorm join row", join, joinRow(3, 30), []relation.Pair{{Owner: uint(3), Related: uint(30)}}},
		{"declared struct slice", declared, reflect.ValueOf([]UserBook{{UserID: 10, BookID: 1}, {UserID: 11, BookID: 1}}),
			[]relation.Pair{{Owner: uint(1), Related: uint(10)}, {Owner: uint(1), Related: uint(11)}}},
		{"pointer to a slice of pointers", declared, reflect.ValueOf(&[]*UserBook{{UserID: 10, BookID: 1}}),
			[]relation.Pair{{Owner: uint(1), Related: uint(10)}}},
		{"array", declared, reflect.ValueOf([1]UserBook{{UserID: 5, BookID: 6}}), []relation.Pair{{Owner: uint(6), Related: uint(5)}}},
		{"rows with a zero side are skipped", declared, reflect.ValueOf([]UserBook{{UserID: 10}, {BookID: 1}, {UserID: 2, BookID: 3}}),
			[]relation.Pair{{Owner: uint(3), Related: uint(2)}}},
		{"empty slice", declared, reflect.ValueOf([]UserBook{}), nil},
		{"a schema without the columns", other, reflect.ValueOf(Author{ID: 1}), nil},
		{"not a struct", declared, reflect.ValueOf(42), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rel.PairsOf(tt.sch, tt.v)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestKeysOf(t *testing.T) {
	db := openDB(t)
	var calls [][]any
	rel, err := relation.Resolve(db, m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
		"Book": func(ids []any) []string { calls = append(calls, ids); return m2m.Format("Book:%v:users")(ids) },
		"User": func(ids []any) []string { calls = append(calls, ids); return m2m.Format("User:%v:books")(ids) },
	}})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	tests := []struct {
		name  string
		pairs []relation.Pair
		want  []string
	}{
		{"none", nil, nil},
		{"one pair", []relation.Pair{{Owner: 7, Related: 12}}, []string{"Book:7:users", "User:12:books"}},
		// book.Users.Append(u1, u2): both users' keys and the book's once.
		{"one owner, two related", []relation.Pair{{Owner: 7, Related: 1}, {Owner: 7, Related: 2}},
			[]string{"Book:7:users", "User:1:books", "User:2:books"}},
		{"duplicates of different types", []relation.Pair{{Owner: uint(7), Related: int64(1)}, {Owner: int64(7), Related: uint(1)}},
			[]string{"Book:7:users", "User:1:books"}},
		{"two owners, one related", []relation.Pair{{Owner: 8, Related: 1}, {Owner: 7, Related: 1}},
			[]string{"Book:8:users", "Book:7:users", "User:1:books"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls = nil
			got, err := rel.KeysOf(tt.pairs)
			if err != nil {
				t.Fatalf("KeysOf: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
			if len(tt.pairs) == 0 && len(calls) != 0 {
				t.Fatalf("key functions called %d times for no pairs; want 0", len(calls))
			}
			// Key functions get ids of the side's primary key type (uint),
			// whatever type the driver or the join row gave.
			for _, ids := range calls {
				for _, id := range ids {
					if _, isUint := id.(uint); !isUint {
						t.Fatalf("key function got id %v of type %T; want uint", id, id)
					}
				}
			}
		})
	}
}

// A key function that names nothing for ids it was given is an error, and
// the other side's keys are still returned.
func TestKeysOfEmpty(t *testing.T) {
	db := openDB(t)
	for name, fn := range map[string]m2m.KeyFunc{
		"nil":   func([]any) []string { return nil },
		"empty": func(ids []any) []string { return make([]string, len(ids)) },
	} {
		t.Run(name, func(t *testing.T) {
			rel, err := relation.Resolve(db, m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
				"Book": m2m.Format("Book:%v:users"), "User": fn,
			}})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			got, err := rel.KeysOf([]relation.Pair{{Owner: 7, Related: 12}})
			if err == nil || !strings.Contains(err.Error(), "User") {
				t.Fatalf("got error %v; want one naming User", err)
			}
			if !slices.Equal(got, []string{"Book:7:users"}) {
				t.Fatalf("got %v; want [Book:7:users]", got)
			}
		})
	}
}
