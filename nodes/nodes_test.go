package nodes_test

import (
	"errors"
	"testing"

	"github.com/gormcacheme/cacheme/nodes"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left running
// after them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type invalidUser struct {
	User int `node:"required"`
}

func (n invalidUser) Key() string { return "user:" + itoa(n.User) }

type constant struct {
	ID int `node:"required"`
}

func (constant) Key() string { return "test" }
func (n constant) InvalidNodes() []nodes.InvalidNode {
	return []nodes.InvalidNode{invalidUser{User: n.ID}}
}

type emptyKey struct{}

func (emptyKey) Key() string                       { return "" }
func (emptyKey) InvalidNodes() []nodes.InvalidNode { return nil }

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		node    any
		wantErr string
		is      error
	}{
		{"set", constant{ID: 1}, "", nil},
		{"pointer set", &constant{ID: 1}, "", nil},
		{"missing node field", constant{}, "nodes: ID is required for constant", nodes.ErrMissingField},
		{"missing invalid node field", invalidUser{}, "nodes: User is required for invalidUser", nodes.ErrMissingField},
		{"empty key", emptyKey{}, "nodes: node has an empty key: emptyKey", nodes.ErrNoKey},
		{"nil pointer", (*constant)(nil), "nodes: nil constant", nil},
		{"nil", nil, "nodes: nil node", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := nodes.Check(tt.node)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check = %v; want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Check = %v; want %q", err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tt.is)
			}
		})
	}
}

func TestName(t *testing.T) {
	if got := nodes.Name(&constant{}); got != "constant" {
		t.Fatalf("Name = %q; want constant", got)
	}
	if got := nodes.Name(invalidUser{}); got != "invalidUser" {
		t.Fatalf("Name = %q; want invalidUser", got)
	}
}
