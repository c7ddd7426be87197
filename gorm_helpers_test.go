package cacheme_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// testDB opens a database for a test: a fresh schema on the PostgreSQL
// server named by CACHEME_TEST_POSTGRES when it is set (the test fails if
// it is unreachable), otherwise a SQLite file in the test's temp dir. cfg
// may set gorm options; its Logger is silenced.
func testDB(t testing.TB, cfg gorm.Config) *gorm.DB {
	t.Helper()
	cfg.Logger = logger.Discard
	dsn := os.Getenv("CACHEME_TEST_POSTGRES")
	if dsn == "" {
		db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "test.db")+"?_busy_timeout=5000&_journal_mode=WAL"), &cfg)
		if err != nil {
			t.Fatalf("sqlite: %v", err)
		}
		t.Cleanup(func() {
			if sqlDB, err := db.DB(); err == nil {
				sqlDB.Close()
			}
		})
		return db
	}
	admin, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("CACHEME_TEST_POSTGRES is set but unusable: %v", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "cm_" + hex.EncodeToString(b[:])
	if err := admin.Exec("CREATE SCHEMA " + schema).Error; err != nil {
		t.Fatalf("CACHEME_TEST_POSTGRES is set but unreachable: %v", err)
	}
	sep := "?"
	if containsQuery(dsn) {
		sep = "&"
	}
	db, err := gorm.Open(postgres.Open(dsn+sep+"search_path="+schema), &cfg)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
		admin.Exec(fmt.Sprintf("DROP SCHEMA %s CASCADE", schema))
		if sqlDB, err := admin.DB(); err == nil {
			sqlDB.Close()
		}
	})
	return db
}

func containsQuery(s string) bool {
	for _, c := range s {
		if c == '?' {
			return true
		}
	}
	return false
}

var bg = context.Background()
