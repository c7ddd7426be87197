package cacheme

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// A rowSet survives the codec unchanged: every driver value kind, NULLs,
// times in UTC, Local and a fixed zone, and column descriptions.
func TestRowsCodecRoundTrip(t *testing.T) {
	zone := time.FixedZone("X", -3*3600)
	rs := &rowSet{
		cols: []rowCol{
			{name: "id", dbType: "INTEGER", scanType: "int64", nullable: 0},
			{name: "v", dbType: "TEXT", scanType: "", nullable: 1},
			{name: "w", dbType: "", scanType: "sql.NullString", nullable: -1},
		},
		rows: [][]any{
			{int64(-5), "text", []byte{0, 1, 2}},
			{int64(1 << 62), nil, 3.25},
			{true, false, time.Date(2024, 2, 3, 4, 5, 6, 7, time.UTC)},
			{time.Date(2024, 2, 3, 4, 5, 6, 7, time.Local), time.Date(2024, 2, 3, 4, 5, 6, 7, zone), ""},
		},
	}
	c := rowsCodec{}
	b, err := c.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var got *rowSet
	if err := c.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.cols, rs.cols) {
		t.Fatalf("cols %+v; want %+v", got.cols, rs.cols)
	}
	for i := range rs.rows {
		for j, want := range rs.rows[i] {
			g := got.rows[i][j]
			if wt, ok := want.(time.Time); ok {
				gt, ok := g.(time.Time)
				if !ok || !gt.Equal(wt) || gt.Location().String() != wt.Location().String() {
					t.Fatalf("row %d col %d: %v; want %v", i, j, g, want)
				}
				if _, off := gt.Zone(); func() int { _, o := wt.Zone(); return o }() != off {
					t.Fatalf("row %d col %d: zone offset differs", i, j)
				}
				continue
			}
			if !reflect.DeepEqual(g, want) {
				t.Fatalf("row %d col %d: %#v; want %#v", i, j, g, want)
			}
		}
	}
	if _, err := c.Marshal(&rowSet{cols: []rowCol{{name: "x"}}, rows: [][]any{{struct{}{}}}}); !errors.Is(err, errRowValue) {
		t.Fatalf("an unsupported value: %v; want errRowValue", err)
	}
}

// Hostile bytes never make the decoder allocate for more than they hold,
// and are errors wrapping ErrCorrupt.
func TestRowsCodecHostile(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":                {},
		"columns beyond bytes": {0xff, 0xff, 0xff, 0xff, 0x0f},
		"rows beyond bytes":    append([]byte{1, 1, 'a', 0, 0, 0}, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"string beyond bytes":  {1, 0xff, 0xff, 0x03, 'a'},
		"unknown kind":         {1, 1, 'a', 0, 0, 0, 1, 99},
		"unknown scan type":    {1, 1, 'a', 0, 3, 'b', 'a', 'd', 0, 0},
		"trailing bytes":       {0, 0, 7},
		"bad nanoseconds":      {1, 1, 'a', 0, 0, 0, 1, rvTime, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0},
	} {
		var got *rowSet
		if err := (rowsCodec{}).Unmarshal(b, &got); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v; want ErrCorrupt", name, err)
		}
	}
}
