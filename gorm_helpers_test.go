package cacheme_test

import (
	"context"
	"testing"

	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme/internal/testenv"
)

// testDB opens a database for a test: a fresh schema on the PostgreSQL
// server named by CACHEME_TEST_POSTGRES when it is set (the test fails if
// it is unreachable), otherwise a SQLite file in the test's temp dir.
func testDB(t testing.TB, cfg gorm.Config) *gorm.DB {
	t.Helper()
	return testenv.DB(t, cfg)
}

var bg = context.Background()
