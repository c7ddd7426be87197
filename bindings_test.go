package cacheme_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/m2m"
	"github.com/gormcacheme/cacheme/nodes"
)

// Author has many Books (through Book.AuthorID): a relation that is not
// many2many. It is only parsed, never migrated.
type Author struct {
	ID    uint
	Name  string
	Books []Book `gorm:"foreignKey:AuthorID"`
}

// Nodes that do not match their model or relation.
type (
	nodeNoSuchField  struct{ Email string }
	nodeWrongType    struct{ Name int }
	nodeNotAModel    struct{ ID uint }
	nodeNoRelation   struct{ User, Book string }
	nodeMissingSide  struct{ User string }
	nodeWrongSide    struct{ User, Book int }
	nodePlainInvalid struct{ ID uint }
)

func (nodeNoSuchField) Key() string        { return "x" }
func (nodeNoSuchField) Model() any         { return &User{} }
func (nodeWrongType) Key() string          { return "x" }
func (nodeWrongType) Model() any           { return &User{} }
func (nodeNotAModel) Key() string          { return "x" }
func (nodeNotAModel) Model() any           { return 42 }
func (nodeNoRelation) Key() string         { return "x" }
func (nodeNoRelation) M2M() (any, string)  { return &User{}, "Books" }
func (nodeMissingSide) Key() string        { return "x" }
func (nodeMissingSide) M2M() (any, string) { return &Book{}, "Users" }
func (nodeWrongSide) Key() string          { return "x" }
func (nodeWrongSide) M2M() (any, string)   { return &Book{}, "Users" }
func (nodePlainInvalid) Key() string       { return "x" }

// TestRegisterM2MErrors checks that a relation that does not match the
// schema is an error wrapping m2m.ErrInvalid: from db.Use when it was
// registered before, at once when registered after.
func TestRegisterM2MErrors(t *testing.T) {
	both := map[string]m2m.KeyFunc{"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books")}
	tests := []struct {
		name  string
		table m2m.Table
	}{
		{"unknown field", m2m.Table{Model: &Book{}, Field: "Readers", Keys: both}},
		{"field that is not a relation", m2m.Table{Model: &Book{}, Field: "Name", Keys: both}},
		{"has-many field", m2m.Table{Model: &Author{}, Field: "Books", Keys: map[string]m2m.KeyFunc{
			"Author": m2m.Format("Author:%v"), "Book": m2m.Format("Book:%v"),
		}}},
		{"missing Keys entry", m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{"Book": m2m.Format("Book:%v:users")}}},
		{"Keys entry of another model", m2m.Table{Model: &Book{}, Field: "Users", Keys: map[string]m2m.KeyFunc{
			"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books"), "Author": m2m.Format("Author:%v"),
		}}},
		{"no model", m2m.Table{Field: "Users", Keys: both}},
		{"no field", m2m.Table{Model: &Book{}, Keys: both}},
		{"not a model", m2m.Table{Model: 42, Field: "Users", Keys: both}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" before Use", func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{})
			ok(t, p.RegisterM2M(tt.table))
			err := testDB(t, gorm.Config{}).Use(p)
			if !errors.Is(err, m2m.ErrInvalid) {
				t.Fatalf("db.Use: got %v; want an error wrapping m2m.ErrInvalid", err)
			}
			t.Log(err)
		})
		t.Run(tt.name+" after Use", func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{})
			ok(t, testDB(t, gorm.Config{}).Use(p))
			err := p.RegisterM2M(tt.table)
			if !errors.Is(err, m2m.ErrInvalid) {
				t.Fatalf("RegisterM2M: got %v; want an error wrapping m2m.ErrInvalid", err)
			}
		})
	}
}

// TestRegisterNodesErrors checks that a node that does not match its model
// or relation is an error wrapping cacheme.ErrInvalidSpec, from db.Use or
// at once.
func TestRegisterNodesErrors(t *testing.T) {
	tests := []struct {
		name string
		node nodes.InvalidNode
	}{
		{"model node field not on the model", nodeNoSuchField{}},
		{"model node field of another type", nodeWrongType{}},
		{"model node on a value that is not a model", nodeNotAModel{}},
		{"m2m node on a relation not registered", nodeNoRelation{}},
		{"m2m node without a field for a side", nodeMissingSide{}},
		{"m2m node with a side field that is not a string", nodeWrongSide{}},
		{"node bound to nothing", nodePlainInvalid{}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" before Use", func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{})
			ok(t, p.RegisterM2M(bookUsers()))
			ok(t, p.RegisterNodes(tt.node))
			err := testDB(t, gorm.Config{}).Use(p)
			if !errors.Is(err, cacheme.ErrInvalidSpec) {
				t.Fatalf("db.Use: got %v; want an error wrapping cacheme.ErrInvalidSpec", err)
			}
			t.Log(err)
		})
		t.Run(tt.name+" after Use", func(t *testing.T) {
			p, _ := newPlugin(t, cacheme.Settings{})
			ok(t, p.RegisterM2M(bookUsers()))
			ok(t, testDB(t, gorm.Config{}).Use(p))
			err := p.RegisterNodes(tt.node)
			if !errors.Is(err, cacheme.ErrInvalidSpec) {
				t.Fatalf("RegisterNodes: got %v; want an error wrapping cacheme.ErrInvalidSpec", err)
			}
		})
	}
}

// TestRegisterAfterUse checks that relations and nodes registered after
// db.Use take effect.
func TestRegisterAfterUse(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&User{}, &Book{}, &Note{}, &Account{}))
	ok(t, p.RegisterM2M(bookUsers()))
	ok(t, p.RegisterNodes(InvalidUserModelNode{}, InvalidUserBookNode{}))
	s := seed(t, db)
	users := newProbe(t, p, "b3users", usersOfBook(db, 3), "Book:3:users")
	node := newProbe(t, p, "allb3", usersOfBook(db, 3), "user:all:book:3")
	name := newProbe(t, p, "user1", userName(db, 1), "user:1")
	other := newProbe(t, p, "user2", userName(db, 2), "user:2")
	users.warm(t)
	node.warm(t)
	name.warm(t)
	other.warm(t)
	u, b := s.users[0], s.books[2]
	ok(t, db.Model(&b).Association("Users").Append(&u))
	users.mustMiss(t, "ann,cy")
	node.mustMiss(t, "ann,cy")
	ok(t, db.Model(&u).Update("name", "ann2").Error)
	name.mustMiss(t, "ann2")
	other.mustHit(t, "bob")
}

// TestRegisterBothDirections checks that a relation may be registered from
// both of its models (Book.Users and User.Books share the join table).
func TestRegisterBothDirections(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ok(t, p.RegisterM2M(m2m.Table{Model: &User{}, Field: "Books", Keys: map[string]m2m.KeyFunc{
		"Book": m2m.Format("Book:%v:users"), "User": m2m.Format("User:%v:books"),
	}}))
	e := newEnvOn(t, p, gorm.Config{})
	s := seed(t, e.db)
	u3 := newProbe(t, p, "u3books", booksOfUser(e.db, 3), "User:3:books")
	b1 := newProbe(t, p, "b1users", usersOfBook(e.db, 1), "Book:1:users")
	b2 := newProbe(t, p, "b2users", usersOfBook(e.db, 2), "Book:2:users")
	for _, pr := range []*probe{u3, b1, b2} {
		pr.warm(t)
	}
	u, b := s.users[2], s.books[0]
	ok(t, e.db.Model(&u).Association("Books").Append(&b))
	u3.mustMiss(t, "go,redis")
	b1.mustMiss(t, "ann,bob,cy")
	b2.mustHit(t, "ann")
	ok(t, e.db.Delete(&User{}, 1).Error)
	b1.mustMiss(t, "bob,cy")
	b2.mustMiss(t, "")
	u3.mustHit(t, "go,redis")
}

// TestUseWithTwoDatabases checks that one plugin serves one *gorm.DB.
func TestUseWithTwoDatabases(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ok(t, testDB(t, gorm.Config{}).Use(p))
	err := testDB(t, gorm.Config{}).Use(p)
	if !errors.Is(err, cacheme.ErrInvalidSpec) {
		t.Fatalf("second db.Use: got %v; want an error wrapping cacheme.ErrInvalidSpec", err)
	}
}

// TestModelInvalidNode checks that a ModelInvalidNode (upstream
// ModelInvalidNode with Meta.model) is filled from each row GORM writes and
// invalidated after the write; other rows' nodes stay.
func TestModelInvalidNode(t *testing.T) {
	tests := []struct {
		name  string
		write func(db *gorm.DB, s seeded) error
		want  string // the new name of user 1
	}{
		{"Save", func(db *gorm.DB, s seeded) error { u := s.users[0]; u.Name = "ann2"; return db.Save(&u).Error }, "ann2"},
		{"Updates", func(db *gorm.DB, s seeded) error {
			u := s.users[0]
			return db.Model(&u).Updates(User{Name: "ann2"}).Error
		}, "ann2"},
		{"Where().Update", func(db *gorm.DB, _ seeded) error {
			return db.Model(&User{}).Where("name = ?", "ann").Update("name", "ann2").Error
		}, "ann2"},
		{"Delete", func(db *gorm.DB, s seeded) error { u := s.users[0]; return db.Delete(&u).Error }, "<none>"},
		{"Where().Delete", func(db *gorm.DB, _ seeded) error { return db.Where("name = ?", "ann").Delete(&User{}).Error }, "<none>"},
		{"Delete by id", func(db *gorm.DB, _ seeded) error { return db.Delete(&User{}, 1).Error }, "<none>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cacheme.Settings{}, gorm.Config{})
			s := seed(t, e.db)
			n1 := newProbe(t, e.p, "n1", userName(e.db, 1), InvalidUserModelNode{ID: 1}.Key())
			n2 := newProbe(t, e.p, "n2", userName(e.db, 2), InvalidUserModelNode{ID: 2}.Key())
			b1 := newProbe(t, e.p, "b1", bookName(e.db, 1), InvalidBookModelNode{ID: 1}.Key())
			n1.warm(t)
			n2.warm(t)
			b1.warm(t)
			ok(t, tt.write(e.db, s))
			n1.mustMiss(t, tt.want)
			n2.mustHit(t, "bob")
			b1.mustHit(t, "go@1")
		})
	}
	t.Run("string field from a numeric column", func(t *testing.T) {
		// A string node field gets the number as text: user 65 is "65",
		// never the rune "A".
		p, _ := newPlugin(t, cacheme.Settings{})
		ok(t, p.RegisterNodes(InvalidUserTextNode{}))
		e := newEnvOn(t, p, gorm.Config{})
		seed(t, e.db)
		n := newProbe(t, e.p, "n", userName(e.db, 1), InvalidUserTextNode{ID: "1"}.Key())
		n.warm(t)
		ok(t, e.db.Model(&User{}).Where("id = ?", 1).Update("name", "ann2").Error)
		n.mustMiss(t, "ann2")
		got, err := cacheme.FillNode[InvalidUserTextNode](e.p, &User{ID: 65})
		ok(t, err)
		equals(t, got.Key(), "usertext:65")
	})
	t.Run("Create", func(t *testing.T) {
		e := newEnv(t, cacheme.Settings{}, gorm.Config{})
		n1 := newProbe(t, e.p, "n1", userName(e.db, 1), InvalidUserModelNode{ID: 1}.Key())
		n1.warm(t)
		ok(t, e.db.Create(&User{Name: "ann"}).Error)
		n1.mustMiss(t, "ann")
	})
}

// TestM2MInvalidNode checks an M2MInvalidNode (upstream ModelInvalidNode
// with Meta.m2m): a join-table write between user u and book b
// invalidates user:<u>:book:all and user:all:book:<b>, from both sides.
func TestM2MInvalidNode(t *testing.T) {
	tests := []struct {
		name  string
		write func(db *gorm.DB, s seeded) error
		miss  map[string]string // group -> new value
		hit   []string          // groups
	}{
		{"append from the user side", func(db *gorm.DB, s seeded) error {
			u, b := s.users[2], s.books[0]
			return db.Model(&u).Association("Books").Append(&b)
		}, map[string]string{"user:3:book:all": "go,redis", "user:all:book:1": "ann,bob,cy"},
			[]string{"user:1:book:all", "user:all:book:3", "user:3:book:1"}},
		{"append from the book side", func(db *gorm.DB, s seeded) error {
			b, u := s.books[2], s.users[0]
			return db.Model(&b).Association("Users").Append(&u)
		}, map[string]string{"user:1:book:all": "go,redis,sql", "user:all:book:3": "ann,cy"},
			[]string{"user:3:book:all", "user:all:book:1", "user:1:book:3"}},
		{"delete from the book side", func(db *gorm.DB, s seeded) error {
			b, u := s.books[0], s.users[1]
			return db.Model(&b).Association("Users").Delete(&u)
		}, map[string]string{"user:2:book:all": "", "user:all:book:1": "ann"},
			[]string{"user:1:book:all", "user:all:book:2"}},
		{"clear from the user side", func(db *gorm.DB, s seeded) error {
			u := s.users[0]
			return db.Model(&u).Association("Books").Clear()
		}, map[string]string{"user:1:book:all": "", "user:all:book:1": "bob", "user:all:book:2": ""},
			[]string{"user:2:book:all", "user:all:book:3"}},
		{"deleting a book", func(db *gorm.DB, _ seeded) error { return db.Delete(&Book{}, 2).Error },
			map[string]string{"user:1:book:all": "go", "user:all:book:2": ""},
			[]string{"user:2:book:all", "user:all:book:1"}},
	}
	// reader returns the users of book b for "user:all:book:<b>", else
	// the books of user u for "user:<u>:book:...".
	reader := func(db *gorm.DB, group string) func(context.Context) (string, error) {
		var id uint
		if _, err := fmt.Sscanf(group, "user:all:book:%d", &id); err == nil {
			return usersOfBook(db, id)
		}
		if _, err := fmt.Sscanf(group, "user:%d:book:", &id); err != nil {
			t.Fatalf("group %q: %v", group, err)
		}
		return booksOfUser(db, id)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cacheme.Settings{}, gorm.Config{})
			s := seed(t, e.db)
			ps := map[string]*probe{}
			before := map[string]string{}
			for g := range tt.miss {
				ps[g] = newProbe(t, e.p, g, reader(e.db, g), g)
			}
			for _, g := range tt.hit {
				ps[g] = newProbe(t, e.p, g, reader(e.db, g), g)
			}
			for g, pr := range ps {
				before[g] = pr.warm(t)
			}
			ok(t, tt.write(e.db, s))
			for g, want := range tt.miss {
				ps[g].mustMiss(t, want)
			}
			for _, g := range tt.hit {
				ps[g].mustHit(t, before[g])
			}
		})
	}
}

// TestFillNode checks FillNode (upstream Invalid(instance=row)) and its
// errors.
func TestFillNode(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	tests := []struct {
		name string
		fill func() (nodes.InvalidNode, error)
		want string // the node's key, or "" for an error
	}{
		{"model node from a pointer", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserModelNode](e.p, &User{ID: 7, Name: "x"})
		}, "user:7"},
		{"model node from a value", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserModelNode](e.p, User{ID: 7})
		}, "user:7"},
		{"book model node", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidBookModelNode](e.p, &Book{ID: 3})
		}, "book:3"},
		{"m2m node from the owner side", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserBookNode](e.p, &Book{ID: 7})
		}, "user:all:book:7"},
		{"m2m node from the related side", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserBookNode](e.p, &User{ID: 12})
		}, "user:12:book:all"},
		{"m2m node from a row without a primary key", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserBookNode](e.p, &User{Name: "x"})
		}, ""},
		{"m2m node from a model that is not a side", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserBookNode](e.p, &Account{ID: 1})
		}, ""},
		{"model node from another model", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserModelNode](e.p, &Book{ID: 1})
		}, ""},
		{"from a map (upstream testuser={'id': 1})", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserBookNode](e.p, map[string]any{"id": 1})
		}, ""},
		{"from nil", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[InvalidUserBookNode](e.p, nil)
		}, ""},
		{"node type not registered", func() (nodes.InvalidNode, error) {
			return cacheme.FillNode[nodeWrongType](e.p, &User{ID: 1})
		}, ""},
		{"before db.Use", func() (nodes.InvalidNode, error) {
			p, _ := newPlugin(t, cacheme.Settings{})
			return cacheme.FillNode[InvalidUserModelNode](p, &User{ID: 1})
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := tt.fill()
			if tt.want == "" {
				if !errors.Is(err, cacheme.ErrInvalidSpec) {
					t.Fatalf("got %v, %v; want an error wrapping cacheme.ErrInvalidSpec", n, err)
				}
				return
			}
			ok(t, err)
			equals(t, n.Key(), tt.want)
		})
	}
}

// TestInvalidateFilledNodes checks manual invalidation with filled nodes
// and with nodes.All (upstream InvalidUserBookNode.objects.invalid).
func TestInvalidateFilledNodes(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	s := seed(t, e.db)
	u1all := newProbe(t, e.p, "u1all", booksOfUser(e.db, 1), "user:1:book:all")
	allb1 := newProbe(t, e.p, "allb1", usersOfBook(e.db, 1), "user:all:book:1")
	user1 := newProbe(t, e.p, "user1", userName(e.db, 1), "user:1")
	for _, pr := range []*probe{u1all, allb1, user1} {
		pr.warm(t)
	}

	n, err := e.p.InvalidateInvalidNodes(bg, InvalidUserBookNode{User: "1", Book: nodes.All})
	ok(t, err)
	equals(t, n, 1)
	u1all.mustMiss(t, "go,sql")
	allb1.mustHit(t, "ann,bob")
	user1.mustHit(t, "ann")

	fill, err := cacheme.FillNode[InvalidUserBookNode](e.p, &s.books[0])
	ok(t, err)
	n, err = e.p.InvalidateInvalidNodes(bg, fill)
	ok(t, err)
	equals(t, n, 1)
	allb1.mustMiss(t, "ann,bob")
	u1all.mustHit(t, "go,sql")

	un, err := cacheme.FillNode[InvalidUserModelNode](e.p, &s.users[0])
	ok(t, err)
	n, err = e.p.InvalidateInvalidNodes(bg, un)
	ok(t, err)
	equals(t, n, 1)
	n, err = e.p.InvalidateInvalidNodes(bg, un) // already invalidated
	ok(t, err)
	equals(t, n, 0)
	user1.mustMiss(t, "ann")
}

// TestInvalidateModels checks the manual API for writes GORM cannot see:
// after a raw db.Exec, InvalidateModels invalidates what a GORM write of
// the rows would, and the keys of their join rows' partners.
func TestInvalidateModels(t *testing.T) {
	tests := []struct {
		name string
		exec string
		rows []any
		miss map[string]string
		hit  []string
	}{
		{"raw UPDATE of a user", "UPDATE users SET name = 'raw' WHERE id = 1", []any{&User{ID: 1}},
			map[string]string{"user1": "raw", "nuser1": "raw", "users": "bob,cy,raw"},
			[]string{"user2", "nuser2", "books"}},
		{"a slice of rows, by value", "UPDATE users SET name = name || '!'", []any{[]User{{ID: 1}, {ID: 2}}, User{ID: 3}},
			map[string]string{"user1": "ann!", "user2": "bob!", "user3": "cy!"},
			[]string{"books"}},
		{"a book moved to another author: old and new row", "UPDATE books SET author_id = 2 WHERE id = 1",
			[]any{&Book{ID: 1, AuthorID: 1}, &Book{ID: 1, AuthorID: 2}},
			map[string]string{"book1": "go@2", "author1": "sql", "author2": "go,redis"},
			[]string{"book2", "book3"}},
		{"a renamed book: its partners' m2m keys", "UPDATE books SET name = 'golang' WHERE id = 1", []any{&Book{ID: 1}},
			map[string]string{"book1": "golang@1", "u1books": "golang,sql", "u2books": "golang", "b1users": "ann,bob", "nallb1": "ann,bob", "nu2all": "golang"},
			[]string{"u3books", "b2users", "book2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cacheme.Settings{}, gorm.Config{})
			seed(t, e.db)
			ps := probes(t, e)
			before := map[string]string{}
			for name, pr := range ps {
				before[name] = pr.warm(t)
			}
			ok(t, e.db.Exec(tt.exec).Error)
			for name := range tt.miss {
				ps[name].mustHit(t, before[name]) // GORM did not see the write
			}
			n, err := e.p.InvalidateModels(bg, tt.rows...)
			ok(t, err)
			if n < len(tt.miss) {
				t.Fatalf("entries invalidated: got %v; want at least %v", n, len(tt.miss))
			}
			for name, want := range tt.miss {
				ps[name].mustMiss(t, want)
			}
			for _, name := range tt.hit {
				ps[name].mustHit(t, before[name])
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		e := newEnv(t, cacheme.Settings{}, gorm.Config{})
		if _, err := e.p.InvalidateModels(bg, 42); !errors.Is(err, cacheme.ErrInvalidSpec) {
			t.Fatalf("InvalidateModels(42): got %v; want an error wrapping cacheme.ErrInvalidSpec", err)
		}
		p, _ := newPlugin(t, cacheme.Settings{})
		if _, err := p.InvalidateModels(bg, &User{ID: 1}); !errors.Is(err, cacheme.ErrInvalidSpec) {
			t.Fatalf("InvalidateModels before db.Use: got %v; want an error wrapping cacheme.ErrInvalidSpec", err)
		}
	})
}

// NickUser has a pointer field that a node reads.
type NickUser struct {
	ID   uint
	Nick *string
}

// nickNode is bound to NickUser by its Nick.
type nickNode struct{ Nick string }

func (n nickNode) Key() string { return "nick:" + n.Nick }
func (nickNode) Model() any    { return &NickUser{} }

// TestModelNodePointerField checks that a node field filled from a pointer
// column gets the pointed-to value, not an address.
func TestModelNodePointerField(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ok(t, p.RegisterNodes(nickNode{}))
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&NickUser{}))
	nick := "zed"
	u := NickUser{Nick: &nick}
	ok(t, db.Create(&u).Error)
	n, err := cacheme.FillNode[nickNode](p, &u)
	ok(t, err)
	equals(t, n.Key(), "nick:zed")
	pr := newProbe(t, p, "nick", func(ctx context.Context) (string, error) {
		var x NickUser
		err := db.WithContext(ctx).First(&x, u.ID).Error
		return *x.Nick, err
	}, "nick:zed")
	pr.warm(t)
	ok(t, db.Model(&u).Update("nick", "zed2").Error)
	pr.mustMiss(t, "zed2")
}

// Person has a many2many on a column that is not a primary key.
type Person struct {
	ID    uint
	Code  string `gorm:"uniqueIndex;size:20"`
	Langs []Lang `gorm:"many2many:person_langs;foreignKey:Code;joinForeignKey:PersonCode;references:Code;joinReferences:LangCode"`
}

// Lang is the other side of Person.Langs.
type Lang struct {
	ID   uint
	Code string `gorm:"uniqueIndex;size:20"`
}

// Peer is on both sides of its relation.
type Peer struct {
	ID      uint
	Friends []Peer `gorm:"many2many:peer_friends"`
}

// peerNode cannot tell the two sides of Peer.Friends apart.
type peerNode struct{ Peer string }

func (n peerNode) Key() string      { return "peer:" + n.Peer }
func (peerNode) M2M() (any, string) { return &Peer{}, "Friends" }

// TestRegisterUnsupportedRelations checks relations the plugin cannot key
// correctly are errors at db.Use, never silent: a many2many on non-primary
// columns, and an M2MInvalidNode on a self-referencing relation.
func TestRegisterUnsupportedRelations(t *testing.T) {
	t.Run("non-primary-key many2many", func(t *testing.T) {
		p, _ := newPlugin(t, cacheme.Settings{})
		ok(t, p.RegisterM2M(m2m.Table{Model: &Person{}, Field: "Langs", Keys: map[string]m2m.KeyFunc{
			"Person": m2m.Format("Person:%v:langs"), "Lang": m2m.Format("Lang:%v:people"),
		}}))
		isErr(t, testDB(t, gorm.Config{}).Use(p), m2m.ErrInvalid)
	})
	t.Run("M2MInvalidNode on a self-referencing relation", func(t *testing.T) {
		p, _ := newPlugin(t, cacheme.Settings{})
		ok(t, p.RegisterM2M(m2m.Table{Model: &Peer{}, Field: "Friends", Keys: map[string]m2m.KeyFunc{
			"Peer": m2m.Format("Peer:%v:friends"),
		}}))
		ok(t, p.RegisterNodes(peerNode{}))
		isErr(t, testDB(t, gorm.Config{}).Use(p), cacheme.ErrInvalidSpec)
	})
}

// RReader and RBook are related through Loan, a join model set up with
// SetupJoinTable.
type RReader struct {
	ID    uint
	Books []RBook `gorm:"many2many:reader_books"`
}

// RBook is the other side of RReader.Books.
type RBook struct {
	ID      uint
	Readers []RReader `gorm:"many2many:reader_books"`
}

// Loan is the join model of RBook.Readers.
type Loan struct {
	RReaderID uint `gorm:"primaryKey"`
	RBookID   uint `gorm:"primaryKey"`
	CreatedAt time.Time
}

// TestSetupJoinTableAfterUse checks a join model set up after db.Use: the
// plugin follows the relation to its new join table.
func TestSetupJoinTableAfterUse(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	ok(t, p.RegisterM2M(m2m.Table{Model: &RBook{}, Field: "Readers", Keys: map[string]m2m.KeyFunc{
		"RBook": m2m.Format("RBook:%v:readers"), "RReader": m2m.Format("RReader:%v:books"),
	}}))
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.SetupJoinTable(&RBook{}, "Readers", &Loan{}))
	ok(t, db.SetupJoinTable(&RReader{}, "Books", &Loan{}))
	ok(t, db.AutoMigrate(&RReader{}, &RBook{}, &Loan{}))
	r, b := RReader{}, RBook{}
	ok(t, db.Create(&r).Error)
	ok(t, db.Create(&b).Error)
	pr := newProbe(t, p, "loans", func(ctx context.Context) (string, error) {
		var n int64
		err := db.WithContext(ctx).Model(&Loan{}).Where("r_book_id = ?", b.ID).Count(&n).Error
		return fmt.Sprint(n), err
	}, fmt.Sprintf("RBook:%d:readers", b.ID))
	pr.warm(t)
	ok(t, db.Model(&b).Association("Readers").Append(&r))
	pr.mustMiss(t, "1")
	ok(t, db.Model(&r).Association("Books").Delete(&b))
	pr.mustMiss(t, "0")
}

// PtrKeyUser has a CacheKey with a pointer receiver.
type PtrKeyUser struct {
	ID   uint
	Name string
}

func (u *PtrKeyUser) CacheKey() string { return fmt.Sprintf("PtrKeyUser:%d", u.ID) }

// TestInvalidateModelsValue checks that InvalidateModels finds the key of a
// row passed by value whose CacheKey has a pointer receiver.
func TestInvalidateModelsValue(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&PtrKeyUser{}))
	pr := newProbe(t, p, "ptr", func(context.Context) (string, error) { return "v", nil }, "PtrKeyUser:1")
	pr.warm(t)
	_, err := p.InvalidateModels(context.Background(), PtrKeyUser{ID: 1})
	ok(t, err)
	pr.mustMiss(t, "v")
}

// JMember and JClub are related through JMembership, a join-table model
// that names both sides' keys itself (M2MCacheKeys): no RegisterM2M.
type JMember struct {
	ID    uint
	Clubs []JClub `gorm:"many2many:j_memberships"`
}

type JClub struct {
	ID      uint
	Members []JMember `gorm:"many2many:j_memberships"`
}

type JMembership struct {
	JMemberID uint `gorm:"primaryKey"`
	JClubID   uint `gorm:"primaryKey"`
	Role      string
}

func (JMembership) M2MCacheKeys() map[string]m2m.KeyFunc {
	return map[string]m2m.KeyFunc{
		"JMember": m2m.Format("JMember:%v:clubs"),
		"JClub":   m2m.Format("JClub:%v:members"),
	}
}

// joinModelDB returns a database with the JMembership join model set up
// before or after db.Use(p), and the rows member 1, 2 and club 1, 2.
func joinModelDB(t *testing.T, p *cacheme.Plugin, setupFirst bool) *gorm.DB {
	t.Helper()
	// No foreign keys, so that a member can be deleted with its join rows
	// left behind.
	db := testDB(t, gorm.Config{DisableForeignKeyConstraintWhenMigrating: true})
	setup := func() {
		ok(t, db.SetupJoinTable(&JMember{}, "Clubs", &JMembership{}))
		ok(t, db.SetupJoinTable(&JClub{}, "Members", &JMembership{}))
	}
	if setupFirst {
		setup()
	}
	ok(t, db.Use(p))
	if !setupFirst {
		setup()
	}
	ok(t, db.AutoMigrate(&JMember{}, &JClub{}, &JMembership{}))
	for _, id := range []uint{1, 2} {
		ok(t, db.Create(&JMember{ID: id}).Error)
		ok(t, db.Create(&JClub{ID: id}).Error)
	}
	return db
}

// A join-table model's M2MCacheKeys invalidates both sides on append,
// delete, replace and clear, from either side, whether it was set up
// before or after db.Use.
func TestJoinModelKeys(t *testing.T) {
	for _, setupFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("SetupJoinTable before Use=%v", setupFirst), func(t *testing.T) {
			rec := &errRecorder{}
			p, _ := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
			db := joinModelDB(t, p, setupFirst)
			count := func(col string, id uint) func(context.Context) (string, error) {
				return func(ctx context.Context) (string, error) {
					var n int64
					err := db.WithContext(ctx).Model(&JMembership{}).Where(col+" = ?", id).Count(&n).Error
					return fmt.Sprint(n), err
				}
			}
			clubsOf1 := newProbe(t, p, "clubs-of-1", count("j_member_id", 1), "JMember:1:clubs")
			membersOf1 := newProbe(t, p, "members-of-1", count("j_club_id", 1), "JClub:1:members")
			membersOf2 := newProbe(t, p, "members-of-2", count("j_club_id", 2), "JClub:2:members")
			for _, pr := range []*probe{clubsOf1, membersOf1, membersOf2} {
				pr.warm(t)
			}
			m1, c1, c2 := &JMember{ID: 1}, &JClub{ID: 1}, &JClub{ID: 2}
			steps := []struct {
				name  string
				write func() error
				want  map[*probe]string // probes that must recompute, with their new values
			}{
				{"append from the member", func() error { return db.Model(m1).Association("Clubs").Append(c1, c2) },
					map[*probe]string{clubsOf1: "2", membersOf1: "1", membersOf2: "1"}},
				{"delete from the club", func() error { return db.Model(c2).Association("Members").Delete(m1) },
					map[*probe]string{clubsOf1: "1", membersOf2: "0"}},
				{"replace from the member", func() error { return db.Model(m1).Association("Clubs").Replace(c2) },
					map[*probe]string{clubsOf1: "1", membersOf1: "0", membersOf2: "1"}},
				{"clear from the club", func() error { return db.Model(c2).Association("Members").Clear() },
					map[*probe]string{clubsOf1: "0", membersOf2: "0"}},
				{"create a join row", func() error { return db.Create(&JMembership{JMemberID: 1, JClubID: 1, Role: "chair"}).Error },
					map[*probe]string{clubsOf1: "1", membersOf1: "1"}},
				{"delete a join row", func() error { return db.Where("j_club_id = ?", 1).Delete(&JMembership{}).Error },
					map[*probe]string{clubsOf1: "0", membersOf1: "0"}},
				{"create another join row", func() error { return db.Create(&JMembership{JMemberID: 1, JClubID: 2}).Error },
					map[*probe]string{clubsOf1: "1", membersOf2: "1"}},
				// Deleting a member invalidates its clubs' keys: its join
				// rows (left behind here) name them.
				{"delete the member", func() error { return db.Delete(&JMember{ID: 1}).Error },
					map[*probe]string{clubsOf1: "1", membersOf2: "1"}},
			}
			for _, st := range steps {
				ok(t, st.write())
				for _, pr := range []*probe{clubsOf1, membersOf1, membersOf2} {
					if want, changed := st.want[pr]; changed {
						pr.mustMiss(t, want)
					} else {
						pr.warm(t)
					}
				}
			}
			if errs := rec.All(); len(errs) > 0 {
				t.Fatalf("errors reported: %v", errs)
			}
		})
	}
}

// JPerson is on both sides of a self-referencing relation whose join model
// tells the sides apart by GORM's names for them: the model's name for the
// declaring side, the field's name for the other.
type JPerson struct {
	ID      uint
	Friends []JPerson `gorm:"many2many:j_friendships"`
}

type JFriendship struct {
	JPersonID uint `gorm:"primaryKey"`
	FriendID  uint `gorm:"primaryKey"`
}

func (JFriendship) M2MCacheKeys() map[string]m2m.KeyFunc {
	return map[string]m2m.KeyFunc{
		"JPerson": m2m.Format("JPerson:%v:friends"),
		"Friends": m2m.Format("JPerson:%v:friend-of"),
	}
}

func TestJoinModelSelfReferencing(t *testing.T) {
	rec := &errRecorder{}
	p, _ := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.SetupJoinTable(&JPerson{}, "Friends", &JFriendship{}))
	ok(t, db.AutoMigrate(&JPerson{}, &JFriendship{}))
	ann, bob := &JPerson{ID: 1}, &JPerson{ID: 2}
	ok(t, db.Create(ann).Error)
	ok(t, db.Create(bob).Error)
	read := func(ctx context.Context) (string, error) { return "v", nil }
	friendsOfAnn := newProbe(t, p, "friends-of-ann", read, "JPerson:1:friends")
	friendOfBob := newProbe(t, p, "bob-is-friend-of", read, "JPerson:2:friend-of")
	wrongSide := newProbe(t, p, "ann-is-friend-of", read, "JPerson:1:friend-of")
	for _, pr := range []*probe{friendsOfAnn, friendOfBob, wrongSide} {
		pr.warm(t)
	}
	ok(t, db.Model(ann).Association("Friends").Append(bob))
	friendsOfAnn.mustMiss(t, "v")
	friendOfBob.mustMiss(t, "v")
	wrongSide.mustHit(t, "v")
	if errs := rec.All(); len(errs) > 0 {
		t.Fatalf("errors reported: %v", errs)
	}
}

// Keys for one join table in both places is a clear error from db.Use.
func TestJoinModelAndRegisterM2M(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	db := testDB(t, gorm.Config{})
	ok(t, db.SetupJoinTable(&JMember{}, "Clubs", &JMembership{}))
	ok(t, p.RegisterM2M(m2m.Table{Model: &JMember{}, Field: "Clubs", Keys: map[string]m2m.KeyFunc{
		"JMember": m2m.Format("JMember:%v:clubs"), "JClub": m2m.Format("JClub:%v:members"),
	}}))
	err := db.Use(p)
	isErr(t, err, m2m.ErrInvalid)
	if !strings.Contains(err.Error(), "one place") {
		t.Fatalf("got %v; want it to say to register the keys in one place", err)
	}
}

// BadMembership names a side its join table does not have: its writes
// still succeed, invalidate the table's group, and report the mistake.
type BadMembership struct {
	JMemberID uint `gorm:"primaryKey"`
	JClubID   uint `gorm:"primaryKey"`
}

func (BadMembership) TableName() string { return "bad_memberships" }

func (BadMembership) M2MCacheKeys() map[string]m2m.KeyFunc {
	return map[string]m2m.KeyFunc{"JMember": m2m.Format("JMember:%v:clubs"), "Nobody": m2m.Format("Nobody:%v")}
}

func TestJoinModelInvalid(t *testing.T) {
	rec := &errRecorder{}
	p, _ := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	ok(t, db.AutoMigrate(&BadMembership{}))
	table := newProbe(t, p, "bad-table", func(context.Context) (string, error) { return "v", nil }, cacheme.TableGroup("bad_memberships"))
	table.warm(t)
	ok(t, db.Create(&BadMembership{JMemberID: 1, JClubID: 1}).Error)
	table.mustMiss(t, "v")
	if !rec.Has(cacheme.ErrInvalidSpec) || !rec.Has(m2m.ErrInvalid) {
		t.Fatalf("errors reported: %v; want one wrapping ErrInvalidSpec and m2m.ErrInvalid", rec.All())
	}
}
