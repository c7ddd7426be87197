package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left running
// after them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite the golden file")

// durations are the only part of the demo's output that changes from run
// to run.
var durations = regexp.MustCompile(` *\b[0-9.]+(ns|µs|ms|s)\b`)

// TestDemo runs the demo on the embedded default (a SQLite file in a temp
// dir and miniredis): it must succeed, and print what
// testdata/demo.golden says, timings aside.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out, filepath.Join(t.TempDir(), "demo.db"), ""); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	got := durations.ReplaceAll(out.Bytes(), []byte(" <t>"))
	golden := filepath.Join("testdata", "demo.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("reading %s: %v (run go test ./cmd/demo -update to create it)", golden, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("demo output differs from %s:\n%s", golden, got)
	}
}
