package cacheme_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

// Of returns the plugin a database uses, and nil for one that uses none.
func TestOf(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	db := testDB(t, gorm.Config{})
	if got := cacheme.Of(db); got != nil {
		t.Fatalf("Of before Use: got %p; want nil", got)
	}
	ok(t, db.Use(p))
	if got := cacheme.Of(db); got != p {
		t.Fatalf("Of: got %p; want %p", got, p)
	}
	if got := cacheme.Of(db.Session(&gorm.Session{})); got != p {
		t.Fatalf("Of a session: got %p; want %p", got, p)
	}
}

// Close waits for the invalidations still running in the background,
// bounded by its context, and every call after it fails with ErrClosed; a
// GORM write after it is refused before it runs.
func TestClose(t *testing.T) {
	rdb, release := hangingRedis(t)
	var h errRecorder
	p := newPluginOn(t, rdb, cacheme.Settings{ErrorHook: h.Hook, FlushTimeout: 20 * time.Millisecond})
	e := newEnvOn(t, p, gorm.Config{})
	u := User{Name: "eve"}
	ok(t, e.db.Create(&u).Error) // its invalidation hangs, in the background

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a flush hanging: got %v; want context.DeadlineExceeded", err)
	}
	release() // Redis fails at once now: the flush gives up
	ok(t, p.Close(context.Background()))

	isErr(t, p.Err(), cacheme.ErrClosed)
	f, err := cacheme.Wrap(p, cacheme.Spec[int, int]{Key: func(int) string { return "k" }}, identity)
	isErr(t, err, cacheme.ErrClosed)
	if f != nil {
		t.Fatal("Wrap after Close returned a function")
	}
	_, err = p.InvalidateGroups(bg, "g")
	isErr(t, err, cacheme.ErrClosed)
	err = e.db.Model(&User{}).Where("id = ?", u.ID).Update("name", "eve2").Error
	isErr(t, err, cacheme.ErrClosed)
	var name string
	ok(t, e.db.Raw("SELECT name FROM users WHERE id = ?", u.ID).Scan(&name).Error)
	equals(t, name, "eve")
}

// A function wrapped before Close fails with ErrClosed after it, without
// running.
func TestCloseWrapped(t *testing.T) {
	p, _ := newPlugin(t, cacheme.Settings{})
	var c counter
	f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "k" }}, c.fn)
	equals(t, call(t, f, 1), 1)
	ok(t, p.Close(bg))
	_, err := f(bg, 1)
	isErr(t, err, cacheme.ErrClosed)
	equals(t, c.n.Load(), 1)
}
