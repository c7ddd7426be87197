package m2m_test

import (
	"slices"
	"testing"

	"github.com/gormcacheme/cacheme/m2m"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left running
// after them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFormat(t *testing.T) {
	tests := []struct {
		name   string
		format string
		ids    []any
		want   []string
	}{
		{"none", "User:%v:books", nil, []string{}},
		{"numbers", "User:%v:books", []any{uint(1), 12}, []string{"User:1:books", "User:12:books"}},
		{"text", "Tag:%v", []any{"go"}, []string{"Tag:go"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m2m.Format(tt.format)(tt.ids); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q; want %q", got, tt.want)
			}
		})
	}
}
