package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// TestMain fails the package's tests if any goroutine is left running
// after them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The Quick start runs on SQLite and an in-process Redis and prints what
// the README says it prints.
func TestQuickStart(t *testing.T) {
	m := miniredis.RunT(t)
	m.ClockTTL(true) // keys expire as the clock runs, as Redis's do
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "q.db")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := db.DB(); err == nil {
		defer s.Close()
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out, db, rdb); err != nil {
		t.Fatal(err)
	}
	if out.String() != quickStartOutput {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), quickStartOutput)
	}
}

// quickStartOutput is what the Quick start prints (the README shows it).
const quickStartOutput = `Dune Emma
Dune Emma
Dune Messiah Emma
[Dune Messiah Emma] <nil>
[Dune Messiah Emma] <nil>
[Dune Messiah Persuasion] <nil>
[Dune Messiah Persuasion Ulysses] <nil>
4 hits, 6 misses
`

// The README's Quick start is this program, verbatim.
func TestQuickStartInReadme(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	body := string(src)
	body = body[strings.Index(body, "package main"):]
	if !strings.Contains(string(readme), "```go\n"+body+"```\n") {
		t.Fatalf("README.md does not hold examples/quickstart/main.go (from \"package main\") verbatim in a go block")
	}
	printed := "It prints:\n\n    " + strings.ReplaceAll(strings.TrimSuffix(quickStartOutput, "\n"), "\n", "\n    ") + "\n"
	if !strings.Contains(string(readme), printed) {
		t.Fatalf("README.md does not show what the Quick start prints:\n%s", printed)
	}
}
