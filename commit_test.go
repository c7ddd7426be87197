package cacheme_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

// window is what a reader saw while a write was not committed yet: warm
// is a probe cached before the write, cold one first computed in the
// window, both on the rows the write changes.
type window struct {
	warm, cold *probe
	mu         sync.Mutex
	warmGot    string
	warmCalls  int64 // computations of warm before the read
	warmAfter  int64 // and after
	coldGot    string
	read       bool
}

func newWindow(t *testing.T, e env, name string, read func(context.Context) (string, error), groups ...string) *window {
	t.Helper()
	w := &window{
		warm: newProbe(t, e.p, name+"-warm", read, groups...),
		cold: newProbe(t, e.p, name+"-cold", read, groups...),
	}
	w.warm.warm(t)
	return w
}

// readNow reads both probes, through connections other than the writer's.
func (w *window) readNow(t *testing.T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.warmCalls = w.warm.calls.Load()
	w.warmGot, w.warmAfter = w.warm.get(t)
	w.coldGot, _ = w.cold.get(t)
	w.read = true
}

// check asserts that the reads in the window saw the old value, the warm
// one from the cache, and that both probes compute the new value after the
// commit.
func (w *window) check(t *testing.T, old, new string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.read {
		t.Fatalf("the reader never ran in the window")
	}
	if w.warmAfter != w.warmCalls {
		t.Fatalf("warm probe recomputed before the commit: got %d computations; want %d", w.warmAfter, w.warmCalls)
	}
	equals(t, w.warmGot, old)
	equals(t, w.coldGot, old)
	w.warm.mustMiss(t, new)
	w.cold.mustMiss(t, new)
}

// TestCommitImplicitTransaction checks that the groups of a statement run
// in GORM's implicit transaction are invalidated after its COMMIT: a reader
// between the write and the commit (a GORM callback placed right before
// gorm:commit_or_rollback_transaction, reading through another connection)
// sees the cached old value, caches the old value if it had none, and
// after the statement returns both recompute the new value.
func TestCommitImplicitTransaction(t *testing.T) {
	tests := []struct {
		name     string
		read     func(db *gorm.DB) func(context.Context) (string, error)
		group    string
		old, new string
		write    func(db *gorm.DB, s seeded) error
	}{
		{"create", func(db *gorm.DB) func(context.Context) (string, error) { return userName(db, 4) }, "User:4", "<none>", "dan",
			func(db *gorm.DB, _ seeded) error { return db.Create(&User{Name: "dan"}).Error }},
		{"update", func(db *gorm.DB) func(context.Context) (string, error) { return userName(db, 1) }, "User:1", "ann", "ann2",
			func(db *gorm.DB, s seeded) error { u := s.users[0]; return db.Model(&u).Update("name", "ann2").Error }},
		{"key-changing update", func(db *gorm.DB) func(context.Context) (string, error) { return booksOfAuthor(db, 2) }, "Author:2:books", "redis", "go,redis",
			func(db *gorm.DB, s seeded) error { b := s.books[0]; return db.Model(&b).Update("author_id", 2).Error }},
		{"delete", func(db *gorm.DB) func(context.Context) (string, error) { return userName(db, 2) }, "User:2", "bob", "<none>",
			func(db *gorm.DB, _ seeded) error { return db.Delete(&User{}, 2).Error }},
		{"delete's partners", func(db *gorm.DB) func(context.Context) (string, error) { return usersOfBook(db, 1) }, "Book:1:users", "ann,bob", "ann",
			func(db *gorm.DB, _ seeded) error { return db.Delete(&User{}, 2).Error }},
		{"association append", func(db *gorm.DB) func(context.Context) (string, error) { return booksOfUser(db, 3) }, "User:3:books", "redis", "go,redis",
			func(db *gorm.DB, s seeded) error {
				u, b := s.users[2], s.books[0]
				return db.Model(&u).Association("Books").Append(&b)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cacheme.Settings{}, gorm.Config{})
			s := seed(t, e.db)
			w := newWindow(t, e, "p", tt.read(e.db), tt.group)
			var armed atomic.Bool
			reader := func(db *gorm.DB) {
				if _, started := db.InstanceGet("gorm:started_transaction"); started && db.Error == nil && armed.CompareAndSwap(true, false) {
					w.readNow(t)
				}
			}
			cb := e.db.Callback()
			ok(t, cb.Create().Before("gorm:commit_or_rollback_transaction").Register("test:reader", reader))
			ok(t, cb.Update().Before("gorm:commit_or_rollback_transaction").Register("test:reader", reader))
			ok(t, cb.Delete().Before("gorm:commit_or_rollback_transaction").Register("test:reader", reader))
			armed.Store(true)
			ok(t, tt.write(e.db, s))
			w.check(t, tt.old, tt.new)
		})
	}
}

// TestCommitTransaction checks explicit transactions: the groups are
// invalidated after the outermost COMMIT, not before, and a reader in the
// open transaction's window cannot leave the old value cached.
func TestCommitTransaction(t *testing.T) {
	rename := func(tx *gorm.DB) error {
		return tx.Model(&User{}).Where("id = ?", 1).Update("name", "ann2").Error
	}
	tests := []struct {
		name string
		run  func(t *testing.T, db *gorm.DB, w *window) error
	}{
		{"db.Transaction", func(t *testing.T, db *gorm.DB, w *window) error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := rename(tx); err != nil {
					return err
				}
				w.readNow(t)
				return nil
			})
		}},
		{"nested db.Transaction", func(t *testing.T, db *gorm.DB, w *window) error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Transaction(func(tx2 *gorm.DB) error { return rename(tx2) }); err != nil {
					return err
				}
				// The inner transaction has returned (a released
				// savepoint): nothing is committed yet.
				w.readNow(t)
				return tx.Create(&User{Name: "dan"}).Error
			})
		}},
		{"doubly nested db.Transaction", func(t *testing.T, db *gorm.DB, w *window) error {
			return db.Transaction(func(tx *gorm.DB) error {
				err := tx.Transaction(func(tx2 *gorm.DB) error {
					return tx2.Transaction(func(tx3 *gorm.DB) error { return rename(tx3) })
				})
				if err != nil {
					return err
				}
				w.readNow(t)
				return nil
			})
		}},
		{"Begin/Commit", func(t *testing.T, db *gorm.DB, w *window) error {
			tx := db.Begin()
			if err := rename(tx); err != nil {
				tx.Rollback()
				return err
			}
			w.readNow(t)
			return tx.Commit().Error
		}},
		{"Begin/Commit with a nested db.Transaction", func(t *testing.T, db *gorm.DB, w *window) error {
			tx := db.Begin()
			if err := tx.Transaction(func(tx2 *gorm.DB) error { return rename(tx2) }); err != nil {
				tx.Rollback()
				return err
			}
			w.readNow(t)
			return tx.Commit().Error
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cacheme.Settings{}, gorm.Config{})
			seed(t, e.db)
			w := newWindow(t, e, "user1", userName(e.db, 1), "User:1")
			ok(t, tt.run(t, e.db, w))
			w.check(t, "ann", "ann2")
		})
	}
}

// TestRollback checks that a rolled-back transaction changes no cached
// value: one cached before it stays right, one computed in the window is
// right, and after the rollback both are invalidated all the same (the
// second line of defence) and recompute the committed value.
func TestRollback(t *testing.T) {
	errAbort := errors.New("abort")
	rename := func(tx *gorm.DB) error {
		return tx.Model(&User{}).Where("id = ?", 1).Update("name", "ann2").Error
	}
	tests := []struct {
		name string
		run  func(t *testing.T, db *gorm.DB, w *window) error
	}{
		{"Begin/Rollback", func(t *testing.T, db *gorm.DB, w *window) error {
			tx := db.Begin()
			if err := rename(tx); err != nil {
				return err
			}
			w.readNow(t)
			return tx.Rollback().Error
		}},
		{"db.Transaction returning an error", func(t *testing.T, db *gorm.DB, w *window) error {
			err := db.Transaction(func(tx *gorm.DB) error {
				if err := rename(tx); err != nil {
					return err
				}
				w.readNow(t)
				return errAbort
			})
			if !errors.Is(err, errAbort) {
				return err
			}
			return nil
		}},
		{"nested db.Transaction, outer rolled back", func(t *testing.T, db *gorm.DB, w *window) error {
			err := db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Transaction(func(tx2 *gorm.DB) error { return rename(tx2) }); err != nil {
					return err
				}
				w.readNow(t)
				return errAbort
			})
			if !errors.Is(err, errAbort) {
				return err
			}
			return nil
		}},
		{"failed statement in the implicit transaction", func(t *testing.T, db *gorm.DB, w *window) error {
			w.readNow(t)
			// A duplicate primary key: the statement fails and is rolled back.
			if err := db.Create(&User{ID: 1, Name: "ann2"}).Error; err == nil {
				return errors.New("the duplicate insert succeeded")
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cacheme.Settings{}, gorm.Config{})
			seed(t, e.db)
			w := newWindow(t, e, "user1", userName(e.db, 1), "User:1")
			ok(t, tt.run(t, e.db, w))
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.warmAfter != w.warmCalls {
				t.Fatalf("warm probe recomputed in the transaction: got %d computations; want %d", w.warmAfter, w.warmCalls)
			}
			equals(t, w.warmGot, "ann")
			equals(t, w.coldGot, "ann")
			w.warm.mustMiss(t, "ann")
			w.cold.mustMiss(t, "ann")
		})
	}
}

// TestReaderAcrossCommit checks the race the after-commit invalidation
// leaves: a reader reads the old row before the COMMIT and stores its
// result after the invalidation. The store must be refused, so that the
// next call computes the new value.
func TestReaderAcrossCommit(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	readDone, committed := make(chan struct{}), make(chan struct{})
	var slow atomic.Bool
	slow.Store(true)
	read := userName(e.db, 1)
	pr := newProbe(t, e.p, "user1", func(ctx context.Context) (string, error) {
		v, err := read(ctx)
		if slow.CompareAndSwap(true, false) {
			close(readDone)
			<-committed
		}
		return v, err
	}, "User:1")

	tx := e.db.Begin()
	ok(t, tx.Model(&User{}).Where("id = ?", 1).Update("name", "ann2").Error)
	got := make(chan string, 1)
	go func() {
		v, err := pr.f(bg, 0)
		if err != nil {
			v = err.Error()
		}
		got <- v
	}()
	<-readDone
	// Clearly after the lease's grant: within its millisecond the store
	// cannot order them, and the function would run once more.
	time.Sleep(2 * time.Millisecond)
	ok(t, tx.Commit().Error)
	close(committed)
	equals(t, <-got, "ann") // the reader itself returns what it read
	settle()
	pr.mustMiss(t, "ann2")
	pr.mustHit(t, "ann2")
	if c := e.p.Stats().Total.Conflicts; c != 1 {
		t.Fatalf("conflicts: got %v; want %v", c, 1)
	}
}

// TestGormConfigs runs write paths and transactions with PrepareStmt and
// SkipDefaultTransaction: they invalidate as with the defaults, and
// db.DB() and tx.DB() keep working.
func TestGormConfigs(t *testing.T) {
	configs := []struct {
		name string
		cfg  gorm.Config
	}{
		{"default", gorm.Config{}},
		{"PrepareStmt", gorm.Config{PrepareStmt: true}},
		{"SkipDefaultTransaction", gorm.Config{SkipDefaultTransaction: true}},
		{"PrepareStmt and SkipDefaultTransaction", gorm.Config{PrepareStmt: true, SkipDefaultTransaction: true}},
	}
	paths := map[string]bool{
		"Create a slice": true, "Save updates": true, "Update moves a loaded book to another author": true,
		"Model(&Book{}).Where(...).Update moves books to another author": true, "Delete(&User{}, []uint{...})": true,
		"Delete a book that has join rows": true, "soft delete": true, "upsert UpdateAll moves a book to another author": true,
		"Append from the user side": true, "Replace from the book side": true, "Clear from the user side": true,
		"Create a book with its users": true,
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			for _, tc := range writeCases {
				if !paths[tc.name] || c.name == "default" { // TestWritePaths runs the defaults
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					runWriteCase(t, c.cfg, tc)
				})
			}
			t.Run("transactions", func(t *testing.T) {
				e := newEnv(t, cacheme.Settings{}, c.cfg)
				seed(t, e.db)
				w := newWindow(t, e, "user1", userName(e.db, 1), "User:1")
				err := e.db.Transaction(func(tx *gorm.DB) error {
					err := tx.Transaction(func(tx2 *gorm.DB) error {
						return tx2.Model(&User{}).Where("id = ?", 1).Update("name", "ann2").Error
					})
					if err != nil {
						return err
					}
					w.readNow(t)
					return nil
				})
				ok(t, err)
				w.check(t, "ann", "ann2")

				tx := e.db.Begin()
				ok(t, tx.Model(&User{}).Where("id = ?", 1).Update("name", "ann3").Error)
				ok(t, tx.Rollback().Error)
				w.warm.mustMiss(t, "ann2") // a rollback invalidates what it touched

				tx = e.db.Begin()
				ok(t, tx.Model(&User{}).Where("id = ?", 1).Update("name", "ann4").Error)
				w.warm.mustHit(t, "ann2")
				ok(t, tx.Commit().Error)
				w.warm.mustMiss(t, "ann4")
			})
			t.Run("PrepareStmt session", func(t *testing.T) {
				e := newEnv(t, cacheme.Settings{}, c.cfg)
				seed(t, e.db)
				sess := e.db.Session(&gorm.Session{PrepareStmt: true})
				w := newWindow(t, e, "user1", userName(e.db, 1), "User:1")
				tx := sess.Begin()
				ok(t, tx.Model(&User{}).Where("id = ?", 1).Update("name", "ann2").Error)
				w.readNow(t)
				ok(t, tx.Commit().Error)
				w.check(t, "ann", "ann2")
				ok(t, sess.Model(&User{}).Where("id = ?", 1).Update("name", "ann3").Error)
				w.warm.mustMiss(t, "ann3")
			})
			t.Run("db.DB", func(t *testing.T) {
				e := newEnv(t, cacheme.Settings{}, c.cfg)
				sqlDB, err := e.db.DB()
				ok(t, err)
				ok(t, sqlDB.Ping())
				sqlDB.SetMaxOpenConns(8)
				err = e.db.Transaction(func(tx *gorm.DB) error {
					txDB, err := tx.DB()
					if err != nil {
						return err
					}
					if txDB != sqlDB {
						t.Errorf("tx.DB(): got %p; want %p", txDB, sqlDB)
					}
					return nil
				})
				ok(t, err)
				tx := e.db.Begin()
				txDB, err := tx.DB()
				ok(t, err)
				ok(t, tx.Rollback().Error)
				if txDB != sqlDB {
					t.Fatalf("Begin().DB(): got %p; want %p", txDB, sqlDB)
				}
				// A write after db.DB() still invalidates.
				seed(t, e.db)
				u1 := newProbe(t, e.p, "user1", userName(e.db, 1), "User:1")
				u1.warm(t)
				ok(t, e.db.Model(&User{ID: 1}).Update("name", "ann2").Error)
				u1.mustMiss(t, "ann2")
			})
		})
	}
}

// TestInvalidationFailureAfterCommit checks that a Redis failure after a
// commit does not turn the committed write into an error: it is reported
// to Settings.ErrorHook and counted, and retried.
func TestInvalidationFailureAfterCommit(t *testing.T) {
	tests := []struct {
		name     string
		failures int64 // pipelines that fail from the commit on (the first reads the query schemes)
		reports  int   // errors the hook gets
		final    bool  // whether the last one says the invalidation was given up
		retried  bool  // whether the entry is invalidated in the end
	}{
		{"transient failure, retried", 2, 2, false, true},
		{"persistent failure", 1000, 5, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, _ := testRedis(t)
			fail := &faultHook{}
			rdb.AddHook(fail)
			var h errRecorder
			p := newPluginOn(t, rdb, cacheme.Settings{ErrorHook: h.Hook})
			e := newEnvOn(t, p, gorm.Config{})
			seed(t, e.db)
			u1 := newProbe(t, p, "user1", userName(e.db, 1), "User:1")
			u1.warm(t)
			errsBefore := p.Stats().Total.RedisErrors
			start := time.Now()
			err := e.db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&User{}).Where("id = ?", 1).Update("name", "ann2").Error; err != nil {
					return err
				}
				fail.pipelines.Store(tt.failures)
				return nil
			})
			fail.pipelines.Store(0)
			if err != nil {
				t.Fatalf("the committed write returned %v; want nil", err)
			}
			t.Logf("commit with failing invalidation took %v", time.Since(start))
			var name string
			ok(t, e.db.Raw("SELECT name FROM users WHERE id = 1").Scan(&name).Error)
			equals(t, name, "ann2")
			errs := h.All()
			equals(t, len(errs), tt.reports)
			for _, err := range errs {
				if !errors.Is(err, cacheme.ErrRedis) || !errors.Is(err, errInjected) {
					t.Fatalf("hook error %v: want it to wrap cacheme.ErrRedis and the Redis error", err)
				}
			}
			last := errs[len(errs)-1].Error()
			if got := strings.Contains(last, "may stay stale"); got != tt.final {
				t.Fatalf("last hook error %q says the invalidation was given up: got %v; want %v", last, got, tt.final)
			}
			if got := p.Stats().Total.RedisErrors - errsBefore; got != int64(tt.reports) {
				t.Fatalf("RedisErrors counted: got %v; want %v", got, tt.reports)
			}
			if tt.retried {
				u1.mustMiss(t, "ann2")
			}
		})
	}

	// Redis is down for good: the plugin's client points at a closed port.
	t.Run("redis unreachable", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
			DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
		t.Cleanup(func() { rdb.Close() })
		var h errRecorder
		p := newPluginOn(t, rdb, cacheme.Settings{ErrorHook: h.Hook})
		e := newEnvOn(t, p, gorm.Config{})
		u := User{Name: "dan"}
		ok(t, e.db.Create(&u).Error)
		err := e.db.Transaction(func(tx *gorm.DB) error { return tx.Model(&u).Update("name", "dan2").Error })
		if err != nil {
			t.Fatalf("the committed write returned %v; want nil", err)
		}
		var got User
		ok(t, e.db.First(&got, u.ID).Error)
		equals(t, got.Name, "dan2")
		errs := h.All()
		if len(errs) == 0 {
			t.Fatalf("hook errors: got none; want some")
		}
		for _, err := range errs {
			if !errors.Is(err, cacheme.ErrRedis) {
				t.Fatalf("hook error %v: want it to wrap cacheme.ErrRedis", err)
			}
		}
		if last := errs[len(errs)-1].Error(); !strings.Contains(last, "may stay stale") {
			t.Fatalf("last hook error: got %q; want it to say entries may stay stale", last)
		}
	})
}

// TestFlushTimeout checks that a committed write returns after
// Settings.FlushTimeout when Redis accepts connections but never answers,
// and that the hook says the invalidation goes on in the background.
func TestFlushTimeout(t *testing.T) {
	rdb, _ := hangingRedis(t)
	var h errRecorder
	p := newPluginOn(t, rdb, cacheme.Settings{ErrorHook: h.Hook, FlushTimeout: 50 * time.Millisecond})
	e := newEnvOn(t, p, gorm.Config{})
	start := time.Now()
	u := User{Name: "eve"}
	ok(t, e.db.Create(&u).Error)
	// Bounded: the write does not wait for Redis's 2s read timeout.
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the write took %v with Redis hanging; want about FlushTimeout (50ms)", took)
	}
	errs := h.All()
	if len(errs) == 0 || !strings.Contains(errs[0].Error(), "goes on in the background") || !errors.Is(errs[0], cacheme.ErrRedis) {
		t.Fatalf("hook errors %v; want one saying the invalidation goes on in the background", errs)
	}
}

// TestUntrackedTransaction checks that a write in a transaction the plugin
// cannot see commit (one begun on the *sql.Conn of db.Connection) fails
// with ErrUntrackedTx and is rolled back, instead of invalidating before the
// commit; outside a transaction db.Connection writes still invalidate.
func TestUntrackedTransaction(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	seed(t, e.db)
	pr := newProbe(t, e.p, "user1", userName(e.db, 1), "User:1")
	pr.warm(t)
	err := e.db.Connection(func(c *gorm.DB) error {
		return c.Transaction(func(tx *gorm.DB) error {
			return tx.Model(&User{}).Where("id = ?", 1).Update("name", "ann2").Error
		})
	})
	if !errors.Is(err, cacheme.ErrUntrackedTx) {
		t.Fatalf("got %v; want ErrUntrackedTx", err)
	}
	pr.mustHit(t, "ann")
	var u User
	ok(t, e.db.First(&u, 1).Error)
	equals(t, u.Name, "ann") // rolled back

	ok(t, e.db.Connection(func(c *gorm.DB) error {
		return c.Model(&User{}).Where("id = ?", 1).Update("name", "ann3").Error
	}))
	pr.mustMiss(t, "ann3")
}

// TestConnectionAssociation checks writes on a db.Connection outside an
// explicit transaction, including nested ones (an association append
// writes join rows inside GORM's implicit transaction): they succeed and
// invalidate after their commit.
func TestConnectionAssociation(t *testing.T) {
	e := newEnv(t, cacheme.Settings{}, gorm.Config{})
	s := seed(t, e.db)
	pr := newProbe(t, e.p, "b3users", usersOfBook(e.db, 3), "Book:3:users")
	pr.warm(t)
	ok(t, e.db.Connection(func(c *gorm.DB) error {
		b, u := s.books[2], s.users[0]
		return c.Model(&b).Association("Users").Append(&u)
	}))
	pr.mustMiss(t, "ann,cy")
}
