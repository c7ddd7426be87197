// Package m2m declares the cache keys of many-to-many relations.
//
// A many-to-many relation is stored in a join table. When GORM writes the
// join table (Association Append, Delete, Replace and Clear, creating a row
// with its associations, or deleting a row that still has join rows), both
// sides change: "the users of book 7" and "the books of user 12". Each side
// gets a key function, as django-cacheme's m2m_cache_keys does, in one of
// two places.
//
// On a join-table model of your own (db.SetupJoinTable), implement
// JoinModel; the plugin finds it with no registration call:
//
//	type UserBook struct {
//		UserID uint `gorm:"primaryKey"`
//		BookID uint `gorm:"primaryKey"`
//	}
//
//	func (UserBook) M2MCacheKeys() map[string]m2m.KeyFunc {
//		return map[string]m2m.KeyFunc{
//			"User": m2m.Format("User:%v:books"),
//			"Book": m2m.Format("Book:%v:users"),
//		}
//	}
//
// For a join table that GORM generates (it has no Go type), register a
// Table with cacheme's RegisterM2M:
//
//	m2m.Table{
//		Model: &Book{}, Field: "Users",
//		Keys: map[string]m2m.KeyFunc{
//			"Book": m2m.Format("Book:%v:users"),
//			"User": m2m.Format("User:%v:books"),
//		},
//	}
//
// Either way the map is keyed by the Go type name of each side's model, and
// each function gets primary keys of its own model and returns the cache
// keys (invalidation group names) of that side. book.Users.Append(u1, u2)
// then invalidates Book:<b>:users, User:<u1>:books and User:<u2>:books.
//
// A self-referencing relation (User.Friends []User) has the same model
// name on both sides. A Table may give one entry, used for both sides, or
// tell the sides apart as a JoinModel must: the declaring side by its model
// name ("User") and the other side by the relation's field name
// ("Friends"), which are GORM's own names for the join table's two sides.
//
// A Table or JoinModel that does not match the schemas (an unknown model or
// field, a field that is not many2many, a missing or extra key function) is
// an error wrapping ErrInvalid, returned by db.Use or RegisterM2M. A table
// may not have both.
package m2m

import (
	"errors"
	"fmt"
)

// KeyFunc returns the cache keys of one side of a relation for the given
// primary keys of that side's model. A key function that returns no key
// for ids it was given is reported as an error (the write still
// invalidates the rest).
type KeyFunc func(ids []any) []string

// Format returns the KeyFunc that formats each id with format, which has
// one verb for the id: Format("User:%v:books") gives "User:12:books" for 12.
func Format(format string) KeyFunc {
	return func(ids []any) []string {
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = fmt.Sprintf(format, id)
		}
		return keys
	}
}

// Table registers the key functions of one many2many relation whose join
// table has no Go model of its own.
type Table struct {
	// Model is a value of a model that declares the relation, e.g. &Book{}.
	Model any
	// Field is the name of the many2many field on Model, e.g. "Users".
	Field string
	// Keys maps the type name of each side's model to its key function.
	// Both sides need one; a self-referencing relation needs one entry, or
	// one for the model's name and one for Field.
	Keys map[string]KeyFunc
}

// JoinModel is implemented by a join-table model (the third argument of
// db.SetupJoinTable) that names the key functions of its relation's two
// sides, keyed as Table.Keys is. The method is called on the zero value.
type JoinModel interface {
	M2MCacheKeys() map[string]KeyFunc
}

// ErrInvalid is the error (matched with errors.Is) for a Table or a
// JoinModel that does not match the schema.
var ErrInvalid = errors.New("m2m: invalid relation")
