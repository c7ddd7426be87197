// Package nodes declares the node types that cacheme memoizes by and
// invalidates by.
//
// A Node names one cached result: its Key is the cache key (the same
// "hash>field" syntax as key mode) and its InvalidNodes are the
// invalidation groups the result joins once it is computed. An InvalidNode
// names one such group: its Key gives the Redis set "<prefix><key>:invalid".
//
// Nodes are plain structs. A field tagged `node:"required"` must be set
// (non-zero) before the node is used; Check reports the first one that is
// missing, naming the field and the node type. Optional methods give a node
// its own stale mode (Staler), time to live (TTLer) and hit or miss
// callbacks (HitHandler, MissHandler).
//
// This package has no Redis or GORM dependency; the cacheme package does the
// caching.
package nodes

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"
)

// Node is one memoized result, identified by its key.
type Node interface {
	// Key returns the cache key, without the configured prefix. A key of
	// the form "hash>field" stores the result as a field of the Redis hash
	// "hash", so that all fields of one hash can be invalidated together.
	Key() string
	// InvalidNodes returns the groups the result joins after it is
	// computed. Nil entries are ignored.
	InvalidNodes() []InvalidNode
}

// InvalidNode is an invalidation group. Invalidating it invalidates every
// cached result that listed it in InvalidNodes.
type InvalidNode interface {
	// Key returns the group name, without the configured prefix and
	// without the ":invalid" suffix.
	Key() string
}

// Staler is implemented by nodes that choose their own stale mode,
// overriding the function's and the global setting (upstream Meta.stale).
type Staler interface {
	// Stale reports whether a stale value may be served while the node is
	// recomputed after an invalidation.
	Stale() bool
}

// TTLer is implemented by nodes that have their own time to live
// (upstream Meta.timeout). A TTL of zero means the global default.
type TTLer interface {
	// TTL returns how long a computed value stays valid.
	TTL() time.Duration
}

// HitHandler is implemented by nodes that want to know about cache hits.
// A hit callback given to cacheme.WrapNode takes precedence.
type HitHandler interface {
	// Hit is called when a valid cached value is returned.
	Hit(ctx context.Context, key string)
}

// MissHandler is implemented by nodes that want to know about cache misses.
// A miss callback given to cacheme.WrapNode takes precedence.
type MissHandler interface {
	// Miss is called just before the result is computed.
	Miss(ctx context.Context, key string)
}

// ErrMissingField is the error (matched with errors.Is) for a node whose
// required field is not set.
var ErrMissingField = errors.New("nodes: required field is missing")

// ErrNoKey is the error (matched with errors.Is) for a node whose Key
// returns an empty string.
var ErrNoKey = errors.New("nodes: node has an empty key")

// FieldError reports a required field that is not set.
type FieldError struct {
	Node  string // the node's type name
	Field string // the Go field name
}

// Error returns "nodes: <field> is required for <node>".
func (e *FieldError) Error() string {
	return fmt.Sprintf("nodes: %s is required for %s", e.Field, e.Node)
}

// Unwrap returns ErrMissingField.
func (e *FieldError) Unwrap() error { return ErrMissingField }

// Name returns the type name of a node value, without package path or
// pointer marks. It is the node's tag.
func Name(v any) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "<nil>"
	}
	return t.Name()
}

// Check verifies that every field tagged `node:"required"` of v (a struct or
// a pointer to one) is set, and that v's key is not empty when v is a Node
// or an InvalidNode. A nil node is an error.
func Check(v any) error {
	rv := reflect.ValueOf(v)
	for rv.IsValid() && rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return fmt.Errorf("nodes: nil %s", Name(v))
		}
		rv = rv.Elem()
	}
	if !rv.IsValid() {
		return errors.New("nodes: nil node")
	}
	if rv.Kind() == reflect.Struct {
		t := rv.Type()
		for i := 0; i < t.NumField(); i++ {
			if t.Field(i).Tag.Get("node") == "required" && rv.Field(i).IsZero() {
				return &FieldError{Node: t.Name(), Field: t.Field(i).Name}
			}
		}
	}
	if k, ok := v.(interface{ Key() string }); ok && k.Key() == "" {
		return fmt.Errorf("%w: %s", ErrNoKey, Name(v))
	}
	return nil
}

// All is the value a field of an M2MInvalidNode holds when its side is not
// given: InvalidUserBookNode{User: "12", Book: nodes.All} is the group of
// every book of user 12.
const All = "all"

// ModelInvalidNode is an InvalidNode bound to a GORM model (upstream
// ModelInvalidNode with Meta.model). Registered with the plugin, it is
// filled from every row of the model that GORM creates, updates or deletes
// (each field from the row's field of the same name) and its group is
// invalidated after the commit.
type ModelInvalidNode interface {
	InvalidNode
	// Model returns a value of the model the node is bound to, e.g. &User{}.
	Model() any
}

// M2MInvalidNode is an InvalidNode bound to a many-to-many relation
// (upstream ModelInvalidNode with Meta.m2m). Its fields are named after the
// Go type names of the relation's two models and are strings (or any): a
// join-table write between user 12 and book 7 invalidates the node with
// User "12" and Book All, and the node with User All and Book "7".
type M2MInvalidNode interface {
	InvalidNode
	// M2M returns a value of the model declaring the relation and the
	// relation's field, e.g. (&Book{}, "Users").
	M2M() (model any, field string)
}
