package cacheme_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/gormcacheme/cacheme"
)

// A GORM write that works without the plugin works with it: every write
// clause GORM offers, run on a plain database and on one with the plugin,
// must give the same error (or none), the same RowsAffected, the same rows
// (and the same RETURNING destination), and every memoized read of a row
// must return the row as the database now holds it.

// WUser is a user of the write-clause tests; email is unique (the index
// idx_w_users_email), for upserts that conflict on it.
type WUser struct {
	ID     uint
	Name   string
	Status string
	Score  int
	Email  string `gorm:"uniqueIndex:idx_w_users_email;size:100"`
}

func (u WUser) CacheKey() string { return fmt.Sprintf("WUser:%d", u.ID) }

// WAccount is a balance of a WUser, for UPDATE … FROM and sub-queries.
type WAccount struct {
	ID      uint
	WUserID uint
	Balance int
}

func (a WAccount) CacheKey() string { return fmt.Sprintf("WAccount:%d", a.ID) }

// WNote is soft-deleted.
type WNote struct {
	ID        uint
	Text      string
	DeletedAt gorm.DeletedAt
}

func (n WNote) CacheKey() string { return fmt.Sprintf("WNote:%d", n.ID) }

// wSeed writes the rows every case starts from:
//
//	w_users    1 ann active 10 a@x, 2 bob active 20 b@x, 3 cy idle 30 c@x, 4 dee idle 40 d@x
//	w_accounts 1 (user 1, 10), 2 (user 2, 1), 3 (user 3, 7)
//	w_notes    1 n1, 2 n2, 3 n3
func wSeed(t *testing.T, db *gorm.DB) {
	t.Helper()
	ok(t, db.AutoMigrate(&WUser{}, &WAccount{}, &WNote{}))
	ok(t, db.Create(&[]WUser{
		{Name: "ann", Status: "active", Score: 10, Email: "a@x"},
		{Name: "bob", Status: "active", Score: 20, Email: "b@x"},
		{Name: "cy", Status: "idle", Score: 30, Email: "c@x"},
		{Name: "dee", Status: "idle", Score: 40, Email: "d@x"},
	}).Error)
	ok(t, db.Create(&[]WAccount{{WUserID: 1, Balance: 10}, {WUserID: 2, Balance: 1}, {WUserID: 3, Balance: 7}}).Error)
	ok(t, db.Create(&[]WNote{{Text: "n1"}, {Text: "n2"}, {Text: "n3"}}).Error)
}

// wRows is every row the probes look at, by the group of its cache key:
// the seeded rows and a few that creates may add.
func wRows() []string {
	var rows []string
	for id := 1; id <= 6; id++ {
		rows = append(rows, fmt.Sprintf("WUser:%d", id))
	}
	for id := 1; id <= 4; id++ {
		rows = append(rows, fmt.Sprintf("WAccount:%d", id), fmt.Sprintf("WNote:%d", id))
	}
	return rows
}

// wRead reads the row named by its group ("WUser:1") as a string, without
// the soft-delete scope: "<none>" if there is no such row, "<deleted>" if
// it is soft-deleted.
func wRead(ctx context.Context, db *gorm.DB, row string) (string, error) {
	model, idText, _ := strings.Cut(row, ":")
	id, err := strconv.Atoi(idText)
	if err != nil {
		return "", err
	}
	q := db.WithContext(ctx).Unscoped().Where("id = ?", id).Limit(1)
	switch model {
	case "WUser":
		var u WUser
		if err := q.Find(&u).Error; err != nil || u.ID == 0 {
			return "<none>", err
		}
		return fmt.Sprintf("%s/%s/%d/%s", u.Name, u.Status, u.Score, u.Email), nil
	case "WAccount":
		var a WAccount
		if err := q.Find(&a).Error; err != nil || a.ID == 0 {
			return "<none>", err
		}
		return fmt.Sprintf("user%d/%d", a.WUserID, a.Balance), nil
	case "WNote":
		var n WNote
		if err := q.Find(&n).Error; err != nil || n.ID == 0 {
			return "<none>", err
		}
		if n.DeletedAt.Valid {
			return n.Text + "/<deleted>", nil
		}
		return n.Text, nil
	}
	return "", fmt.Errorf("unknown row %q", row)
}

// wProbe memoizes wRead of one row under the key "w:<row>", joining the
// row's group.
func wProbe(t *testing.T, p *cacheme.Plugin, db *gorm.DB, row string, extra ...string) func(context.Context, int) (string, error) {
	t.Helper()
	return mustWrap(t, p, cacheme.Spec[int, string]{
		Key:    func(int) string { return "w:" + row },
		Groups: func(int, string) []string { return append([]string{row}, extra...) },
		Tag:    "wprobe",
	}, func(ctx context.Context, _ int) (string, error) { return wRead(ctx, db, row) })
}

// wDump returns every row of the three tables, soft-deleted ones included
// (their deletion time left out: it differs between the databases).
func wDump(t *testing.T, db *gorm.DB) string {
	t.Helper()
	var users []WUser
	var accounts []WAccount
	var notes []WNote
	ok(t, db.Unscoped().Order("id").Find(&users).Error)
	ok(t, db.Unscoped().Order("id").Find(&accounts).Error)
	ok(t, db.Unscoped().Order("id").Find(&notes).Error)
	var b strings.Builder
	fmt.Fprintf(&b, "users %+v\naccounts %+v\nnotes", users, accounts)
	for _, n := range notes {
		fmt.Fprintf(&b, " {ID:%d Text:%s Deleted:%v}", n.ID, n.Text, n.DeletedAt.Valid)
	}
	return b.String()
}

// wReturned describes what a write left in its destination or model (a
// RETURNING clause scans into it, a create sets the primary key), sorted
// by id; "" for other types.
func wReturned(res *gorm.DB) string {
	var parts []string
	for _, v := range []any{res.Statement.Dest, res.Statement.Model} {
		switch d := v.(type) {
		case *WUser:
			parts = append(parts, fmt.Sprintf("%+v", *d))
		case *[]WUser:
			rows := append([]WUser(nil), *d...)
			sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
			parts = append(parts, fmt.Sprintf("%+v", rows))
		case *WAccount:
			parts = append(parts, fmt.Sprintf("%+v", *d))
		case *[]WAccount:
			rows := append([]WAccount(nil), *d...)
			sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
			parts = append(parts, fmt.Sprintf("%+v", rows))
		}
	}
	return strings.Join(parts, " ")
}

type wCase struct {
	name string
	// setup, if set, runs on both databases after the seed, before the
	// probes are computed.
	setup func(db *gorm.DB) error
	write func(db *gorm.DB) *gorm.DB
	// changed lists the rows the write changes; checked on the plain
	// database, so that no case passes without writing anything.
	changed []string
	// tableGroups: the write names no Model, so the plugin knows only its
	// table and invalidates TableGroup (a documented limit, README
	// "Limits"): the probes join the tables' groups, as the README tells
	// readers of such tables to.
	tableGroups bool
}

// wExec returns a setup running statements.
func wExec(stmts ...string) func(db *gorm.DB) error {
	return func(db *gorm.DB) error {
		for _, s := range stmts {
			if err := db.Exec(s).Error; err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	}
}

// wCases returns the write clauses GORM offers, for a dialect
// ("sqlite" or "postgres"); fromOK tells whether the database runs
// UPDATE … FROM and RETURNING (SQLite 3.35 and later; the bundled
// SQLite is newer).
func wCases(dialect string, fromOK bool) []wCase {
	email := []clause.Column{{Name: "email"}}
	cases := []wCase{
		{
			name: "OnConflict DoNothing on a conflicting row",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Clauses(clause.OnConflict{DoNothing: true}).Create(&WUser{Name: "dup", Email: "a@x"})
			},
		},
		{
			name: "OnConflict DoNothing inserts the new rows of a slice",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Clauses(clause.OnConflict{Columns: email, DoNothing: true}).
					Create(&[]WUser{{Name: "dup", Email: "b@x"}, {Name: "eve", Status: "new", Email: "e@x"}})
			},
			// The conflicting row takes id 5 from the sequence.
			changed: []string{"WUser:6"},
		},
		{
			name: "OnConflict UpdateAll on the primary key",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Clauses(clause.OnConflict{UpdateAll: true}).
					Create(&WUser{ID: 1, Name: "ann2", Status: "gone", Score: 11, Email: "a2@x"})
			},
			changed: []string{"WUser:1"},
		},
		{
			name: "OnConflict UpdateAll on a unique column",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Clauses(clause.OnConflict{Columns: email, UpdateAll: true}).
					Create(&WUser{Name: "bob2", Status: "new", Score: 21, Email: "b@x"})
			},
			changed: []string{"WUser:2"},
		},
		{
			name: "OnConflict DoUpdates AssignmentColumns, a slice with a new row",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Clauses(clause.OnConflict{Columns: email, DoUpdates: clause.AssignmentColumns([]string{"name", "score"})}).
					Create(&[]WUser{{Name: "ann3", Score: 1, Email: "a@x"}, {Name: "zed", Email: "z@x"}})
			},
			changed: []string{"WUser:1", "WUser:6"},
		},
		{
			name: "OnConflict DoUpdates with literal Assignments",
			write: func(db *gorm.DB) *gorm.DB {
				// The row as written says status "", the database ends with "vip".
				return db.Clauses(clause.OnConflict{
					Columns:   []clause.Column{{Name: "id"}},
					DoUpdates: clause.Assignments(map[string]any{"status": "vip", "score": 99}),
				}).Create(&WUser{ID: 2, Name: "ignored", Email: "b@x"})
			},
			changed: []string{"WUser:2"},
		},
		{
			name: "OnConflict with a Where on the conflict target",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Clauses(clause.OnConflict{
					Columns:     email,
					TargetWhere: clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "email <> ''"}}},
					DoUpdates:   clause.AssignmentColumns([]string{"name"}),
				}).Create(&WUser{Name: "cy2", Email: "c@x"})
			},
			changed: []string{"WUser:3"},
		},
		{
			name: "OnConflict DoUpdates with a Where",
			write: func(db *gorm.DB) *gorm.DB {
				// Only ann (score 10) is updated; bob (20) keeps his name.
				return db.Clauses(clause.OnConflict{
					Columns:   email,
					DoUpdates: clause.AssignmentColumns([]string{"name"}),
					Where:     clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "w_users.score < ?", Vars: []any{15}}}},
				}).Create(&[]WUser{{Name: "ann4", Email: "a@x"}, {Name: "bob4", Email: "b@x"}})
			},
			changed: []string{"WUser:1"},
		},
		{
			name: "Where with a sub-query",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{}).Where("id IN (?)", db.Table("w_accounts").Select("w_user_id").Where("balance > ?", 5)).
					Update("status", "rich")
			},
			changed: []string{"WUser:1", "WUser:3"},
		},
		{
			name: "Delete with a sub-query",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Where("w_user_id IN (?)", db.Model(&WUser{}).Select("id").Where("status = ?", "active")).Delete(&WAccount{})
			},
			changed: []string{"WAccount:1", "WAccount:2"},
		},
		{
			name: "Updates with Select",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{ID: 2}).Select("name").Updates(WUser{Name: "bob5", Status: "ignored", Score: 7})
			},
			changed: []string{"WUser:2"},
		},
		{
			name: "Updates with Select of a zero value",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{ID: 3}).Select("name", "score").Updates(WUser{Name: "cy5"})
			},
			changed: []string{"WUser:3"},
		},
		{
			name: "Updates with Omit",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{ID: 2}).Omit("status").Updates(map[string]any{"name": "bob6", "status": "ignored"})
			},
			changed: []string{"WUser:2"},
		},
		{
			name: "Save with Select",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Select("name").Save(&WUser{ID: 3, Name: "cy6", Status: "ignored", Email: "ignored@x"})
			},
			changed: []string{"WUser:3"},
		},
		{
			name: "UpdateColumn with gorm.Expr",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{}).Where("id = ?", 4).UpdateColumn("score", gorm.Expr("score + ?", 1))
			},
			changed: []string{"WUser:4"},
		},
		{
			name: "UpdateColumns with gorm.Expr on a model's primary key",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{ID: 1}).UpdateColumns(map[string]any{"score": gorm.Expr("score * ?", 2), "status": "x"})
			},
			changed: []string{"WUser:1"},
		},
		{
			name: "Updates with gorm.Expr in a map",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{}).Where("status = ?", "active").
					Updates(map[string]any{"score": gorm.Expr("score * ?", 3), "name": gorm.Expr("name || ?", "!")})
			},
			changed: []string{"WUser:1", "WUser:2"},
		},
		{
			name: "Table without Model",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Table("w_users").Where("id = ?", 2).Update("name", "t2")
			},
			changed:     []string{"WUser:2"},
			tableGroups: true,
		},
		{
			name: "Table without Model, Updates of a map over several rows",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Table("w_users").Where("score > ?", 15).Updates(map[string]any{"status": "t"})
			},
			changed:     []string{"WUser:2", "WUser:3", "WUser:4"},
			tableGroups: true,
		},
		{
			name: "Table without Model, Delete",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Table("w_accounts").Where("balance < ?", 5).Delete(map[string]any{})
			},
			changed:     []string{"WAccount:2"},
			tableGroups: true,
		},
		{
			name: "Table and Model of the same table",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Table("w_users").Model(&WUser{}).Where("id = ?", 3).Update("score", 0)
			},
			changed: []string{"WUser:3"},
		},
		{
			name: "Model with an aliased Table",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{}).Table("w_users AS u").Where("u.id = ?", 1).Update("name", "alias")
			},
			changed: []string{"WUser:1"},
		},
		{
			name: "Delete by Where",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Where("score > ?", 25).Delete(&WUser{})
			},
			changed: []string{"WUser:3", "WUser:4"},
		},
		{
			name:    "Delete by primary key",
			write:   func(db *gorm.DB) *gorm.DB { return db.Delete(&WUser{}, 2) },
			changed: []string{"WUser:2"},
		},
		{
			name:    "Delete of a loaded row",
			write:   func(db *gorm.DB) *gorm.DB { return db.Delete(&WAccount{ID: 3}) },
			changed: []string{"WAccount:3"},
		},
		{
			name:    "soft Delete",
			write:   func(db *gorm.DB) *gorm.DB { return db.Delete(&WNote{}, 1) },
			changed: []string{"WNote:1"},
		},
		{
			name: "soft Delete by Where skips soft-deleted rows",
			setup: func(db *gorm.DB) error {
				return db.Delete(&WNote{}, 3).Error
			},
			write:   func(db *gorm.DB) *gorm.DB { return db.Where("text LIKE ?", "n%").Delete(&WNote{}) },
			changed: []string{"WNote:1", "WNote:2"},
		},
		{
			name: "Unscoped Delete",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Unscoped().Where("text = ?", "n2").Delete(&WNote{})
			},
			changed: []string{"WNote:2"},
		},
		{
			name:    "Unscoped Delete of a soft-deleted row",
			setup:   func(db *gorm.DB) error { return db.Delete(&WNote{}, 3).Error },
			write:   func(db *gorm.DB) *gorm.DB { return db.Unscoped().Delete(&WNote{}, 3) },
			changed: []string{"WNote:3"},
		},
		{
			name: "Update of a soft-deleted model skips soft-deleted rows",
			setup: func(db *gorm.DB) error {
				return db.Delete(&WNote{}, 2).Error
			},
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WNote{}).Where("id IN ?", []int{1, 2}).Update("text", "edited")
			},
			changed: []string{"WNote:1"},
		},
		{
			name: "bulk Where Updates(map)",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{}).Where("score BETWEEN ? AND ?", 15, 45).Updates(map[string]any{"status": "bulk", "name": "many"})
			},
			changed: []string{"WUser:2", "WUser:3", "WUser:4"},
		},
		{
			name: "bulk Updates(struct) moving accounts to another user",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WAccount{}).Where("balance > ?", 5).Updates(WAccount{WUserID: 4})
			},
			changed: []string{"WAccount:1", "WAccount:3"},
		},
		{
			name: "an update that matches no row",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{}).Where("score > ?", 1000).Update("name", "nobody")
			},
		},
		{
			name: "an update without conditions (refused by GORM)",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Model(&WUser{}).Update("name", "everyone")
			},
		},
		{
			name: "an update of every row (AllowGlobalUpdate)",
			write: func(db *gorm.DB) *gorm.DB {
				return db.Session(&gorm.Session{AllowGlobalUpdate: true}).Model(&WUser{}).Update("status", "all")
			},
			changed: []string{"WUser:1", "WUser:2", "WUser:3", "WUser:4"},
		},
	}
	if fromOK {
		cases = append(cases,
			wCase{
				name: "Update with clause.From (GORM's suite's case)",
				write: func(db *gorm.DB) *gorm.DB {
					return db.Model(&WUser{}).Clauses(clause.From{Tables: []clause.Table{{Name: "w_accounts"}}}).
						Where("w_accounts.w_user_id = w_users.id AND w_accounts.balance > ?", 5).Update("name", "rich")
				},
				changed: []string{"WUser:1", "WUser:3"},
			},
			wCase{
				name: "Updates with clause.From setting a value of the other table",
				write: func(db *gorm.DB) *gorm.DB {
					return db.Model(&WUser{}).Clauses(clause.From{Tables: []clause.Table{{Name: "w_accounts"}}}).
						Where("w_accounts.w_user_id = w_users.id AND w_accounts.balance < ?", 5).
						Updates(map[string]any{"score": gorm.Expr("w_accounts.balance")})
				},
				changed: []string{"WUser:2"},
			},
			wCase{
				name: "Update with clause.Returning into a slice",
				write: func(db *gorm.DB) *gorm.DB {
					var out []WUser
					return db.Model(&out).Clauses(clause.Returning{}).Where("status = ?", "active").Update("score", 99)
				},
				changed: []string{"WUser:1", "WUser:2"},
			},
			wCase{
				name: "Updates with clause.Returning of some columns",
				write: func(db *gorm.DB) *gorm.DB {
					var out []WUser
					return db.Model(&out).Clauses(clause.Returning{Columns: []clause.Column{{Name: "id"}, {Name: "score"}}}).
						Where("score >= ?", 20).Updates(map[string]any{"score": gorm.Expr("score * ?", 2), "name": "dbl"})
				},
				changed: []string{"WUser:2", "WUser:3", "WUser:4"},
			},
			wCase{
				name: "Delete with clause.Returning into a slice",
				write: func(db *gorm.DB) *gorm.DB {
					var out []WUser
					return db.Clauses(clause.Returning{}).Where("status = ?", "idle").Delete(&out)
				},
				changed: []string{"WUser:3", "WUser:4"},
			},
			wCase{
				name: "soft Delete with clause.Returning",
				write: func(db *gorm.DB) *gorm.DB {
					var out []WNote
					return db.Clauses(clause.Returning{Columns: []clause.Column{{Name: "id"}}}).Where("id < ?", 3).Delete(&out)
				},
				changed: []string{"WNote:1", "WNote:2"},
			},
		)
	}
	if dialect == "postgres" {
		cases = append(cases, wCase{
			name: "OnConflict OnConstraint",
			// The unique index on email becomes the constraint named.
			setup: wExec("ALTER TABLE w_users ADD CONSTRAINT w_users_email_uq UNIQUE USING INDEX idx_w_users_email"),
			write: func(db *gorm.DB) *gorm.DB {
				return db.Clauses(clause.OnConflict{OnConstraint: "w_users_email_uq", DoUpdates: clause.AssignmentColumns([]string{"name", "score"})}).
					Create(&WUser{Name: "cy7", Score: 77, Email: "c@x"})
			},
			changed: []string{"WUser:3"},
		}, wCase{
			name:  "OnConflict OnConstraint DoNothing",
			setup: wExec("ALTER TABLE w_users ADD CONSTRAINT w_users_email_uq UNIQUE USING INDEX idx_w_users_email"),
			write: func(db *gorm.DB) *gorm.DB {
				return db.Clauses(clause.OnConflict{OnConstraint: "w_users_email_uq", DoNothing: true}).
					Create(&[]WUser{{Name: "dup", Email: "d@x"}, {Name: "fay", Email: "f@x"}})
			},
			changed: []string{"WUser:6"},
		})
	}
	return cases
}

// wFromOK tells whether db runs UPDATE … FROM and RETURNING: PostgreSQL,
// or SQLite 3.35 or later.
func wFromOK(t *testing.T, db *gorm.DB) bool {
	t.Helper()
	if db.Dialector.Name() != "sqlite" {
		return true
	}
	var v string
	ok(t, db.Raw("SELECT sqlite_version()").Scan(&v).Error)
	var major, minor int
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		t.Fatalf("sqlite_version() = %q: %v", v, err)
	}
	return major > 3 || major == 3 && minor >= 35
}

func TestWriteClauses(t *testing.T) {
	probeDB := testDB(t, gorm.Config{})
	dialect := probeDB.Dialector.Name()
	for _, tc := range wCases(dialect, wFromOK(t, probeDB)) {
		t.Run(tc.name, func(t *testing.T) {
			plain := testDB(t, gorm.Config{})
			rec := &errRecorder{}
			p, _ := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
			db := testDB(t, gorm.Config{})
			ok(t, db.Use(p))
			for _, d := range []*gorm.DB{plain, db} {
				wSeed(t, d)
				if tc.setup != nil {
					ok(t, tc.setup(d))
				}
			}
			rows := wRows()
			probes := make(map[string]func(context.Context, int) (string, error), len(rows))
			before := map[string]string{}
			for _, row := range rows {
				var extra []string
				if tc.tableGroups {
					extra = []string{cacheme.TableGroup("w_users"), cacheme.TableGroup("w_accounts"), cacheme.TableGroup("w_notes")}
				}
				probes[row] = wProbe(t, p, db, row, extra...)
				before[row] = call(t, probes[row], 0)
			}

			want := tc.write(plain)
			got := tc.write(db)

			if (want.Error == nil) != (got.Error == nil) {
				t.Fatalf("error: with the plugin %v; without %v", got.Error, want.Error)
			}
			if got.RowsAffected != want.RowsAffected {
				t.Errorf("RowsAffected: with the plugin %d; without %d", got.RowsAffected, want.RowsAffected)
			}
			if g, w := wReturned(got), wReturned(want); g != w {
				t.Errorf("destination: with the plugin\n%s\nwithout\n%s", g, w)
			}
			if g, w := wDump(t, db), wDump(t, plain); g != w {
				t.Errorf("rows: with the plugin\n%s\nwithout\n%s", g, w)
			}
			for _, row := range tc.changed {
				now, err := wRead(bg, plain, row)
				ok(t, err)
				if now == before[row] {
					t.Errorf("case error: %s is still %q after the write without the plugin (error %v)", row, now, want.Error)
				}
			}
			for _, row := range rows {
				fresh, err := wRead(bg, db, row)
				ok(t, err)
				if cached := call(t, probes[row], 0); cached != fresh {
					t.Errorf("cached read of %s is stale: got %q; the database holds %q", row, cached, fresh)
				}
			}
			for _, err := range rec.All() {
				if errors.Is(err, cacheme.ErrBroadInvalidation) {
					t.Logf("reported: %v", err)
				} else {
					t.Errorf("reported: %v", err)
				}
			}
		})
	}
}

// TestBroadFallbackReported breaks the plugin's own read of the rows an
// update changes (its first query, which the plugin runs with SkipHooks):
// the update still succeeds as it does without the plugin, the rows it
// changed are invalidated anyway (the fallback reads the whole table), and
// the fallback is reported and counted.
func TestBroadFallbackReported(t *testing.T) {
	write := func(db *gorm.DB) *gorm.DB {
		return db.Model(&WUser{}).Where("score > ?", 15).Update("name", "changed")
	}
	plain := testDB(t, gorm.Config{})
	wSeed(t, plain)
	want := write(plain)
	ok(t, want.Error)

	rec := &errRecorder{}
	p, _ := newPlugin(t, cacheme.Settings{ErrorHook: rec.Hook})
	db := testDB(t, gorm.Config{})
	ok(t, db.Use(p))
	wSeed(t, db)
	var armed atomic.Bool
	var broken atomic.Int64
	ok(t, db.Callback().Query().Before("gorm:query").Register("test:break", func(d *gorm.DB) {
		if d.Statement.SkipHooks && armed.CompareAndSwap(true, false) {
			broken.Add(1)
			d.AddError(errors.New("read broken"))
		}
	}))
	rows := []string{"WUser:1", "WUser:2", "WUser:3", "WUser:4"}
	probes := map[string]func(context.Context, int) (string, error){}
	for _, row := range rows {
		probes[row] = wProbe(t, p, db, row)
		call(t, probes[row], 0)
	}

	armed.Store(true)
	got := write(db)
	ok(t, got.Error)
	equals(t, broken.Load(), int64(1))
	equals(t, got.RowsAffected, want.RowsAffected)
	equals(t, wDump(t, db), wDump(t, plain))
	for _, row := range rows {
		fresh, err := wRead(bg, db, row)
		ok(t, err)
		if cached := call(t, probes[row], 0); cached != fresh {
			t.Errorf("cached read of %s is stale: got %q; the database holds %q", row, cached, fresh)
		}
	}
	if !rec.Has(cacheme.ErrBroadInvalidation) {
		t.Errorf("reported %v; want an error wrapping ErrBroadInvalidation", rec.All())
	}
	if n := p.Stats().Total.Fallbacks; n == 0 {
		t.Errorf("Stats().Total.Fallbacks = 0; want > 0")
	}
}
