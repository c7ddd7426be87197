package admin_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/admin"
	"github.com/gormcacheme/cacheme/migrations"
)

// Example mounts the admin page under /cache/ with basic auth, for one
// host name, with a log in SQLite.
func Example() {
	mr := miniredis.NewMiniRedis() // an in-process Redis
	if err := mr.Start(); err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	p := cacheme.New(cacheme.Settings{Redis: rdb})
	if err := p.Err(); err != nil {
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

	page := admin.Handler(p, admin.Options{
		// Who may do what: here one set of basic-auth credentials (serve
		// it over HTTPS). Options.Authorize asks the application instead,
		// per action.
		BasicAuth: &admin.BasicAuth{User: "ann", Password: "secret"},
		// The names the page is served under: other Host headers are
		// refused (the default is localhost only).
		AllowedHosts: []string{"admin.example.com"},
		DB:           db,
		Dialect:      migrations.SQLite,
	})
	mux := http.NewServeMux()
	mux.Handle("/cache/", http.StripPrefix("/cache", page))

	serve := func(method, target string, auth bool) {
		req := httptest.NewRequest(method, target, strings.NewReader("kind=tag&target=books"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth {
			req.SetBasicAuth("ann", "secret")
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Println(method, target, auth, rec.Code)
	}
	serve(http.MethodGet, "http://admin.example.com/cache/", false) // no credentials
	serve(http.MethodGet, "http://admin.example.com/cache/", true)
	serve(http.MethodGet, "http://rebound.example/cache/", true)              // a foreign Host
	serve(http.MethodPost, "http://admin.example.com/cache/invalidate", true) // no CSRF token: not from the page's form
	// Output:
	// GET http://admin.example.com/cache/ false 401
	// GET http://admin.example.com/cache/ true 200
	// GET http://rebound.example/cache/ true 403
	// POST http://admin.example.com/cache/invalidate true 403
}
