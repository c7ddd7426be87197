package admin_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/admin"
	"github.com/gormcacheme/cacheme/migrations"
)

// Example mounts the admin page under /cache/, behind the application's
// own authentication, with a log in SQLite.
func Example() {
	mr := miniredis.NewMiniRedis() // an in-process Redis
	if err := mr.Start(); err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	p, err := cacheme.New(cacheme.Settings{Redis: rdb})
	if err != nil {
		log.Fatal(err)
	}

	dir, err := os.MkdirTemp("", "cacheme-admin")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	gdb, err := gorm.Open(sqlite.Open(filepath.Join(dir, "app.db")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		log.Fatal(err)
	}
	db, err := gdb.DB()
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := migrations.Up(context.Background(), db, migrations.SQLite); err != nil {
		log.Fatal(err)
	}

	// Authentication is the application's job; this one uses basic auth.
	staffOnly := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if user, pass, ok := r.BasicAuth(); !ok || user != "ann" || pass != "secret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="cache"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	page := admin.Handler(p, admin.Options{
		DB:      db,
		Dialect: migrations.SQLite,
		Actor:   func(r *http.Request) string { user, _, _ := r.BasicAuth(); return user },
	})
	mux := http.NewServeMux()
	mux.Handle("/cache/", staffOnly(http.StripPrefix("/cache", page)))

	for _, auth := range []bool{false, true} {
		req := httptest.NewRequest(http.MethodGet, "/cache/", nil)
		if auth {
			req.SetBasicAuth("ann", "secret")
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Println("GET /cache/:", rec.Code)
	}
	// Output:
	// GET /cache/: 401
	// GET /cache/: 200
}
