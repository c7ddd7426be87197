package cacheme

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"time"
)

// Rows as the database returned them, for the query cache: a cached
// query keeps the column descriptions and the driver's values of its rows,
// and a hit hands them back through database/sql (a driver of this file),
// so that GORM scans them exactly as it scans the database's rows: the
// same conversions, Scanners, hooks and errors (ErrRecordNotFound).

// rowSet is the result of one query.
type rowSet struct {
	cols []rowCol
	rows [][]any // each value is nil, int64, float64, bool, []byte, string or time.Time
}

// rowCol describes one column as the driver did.
type rowCol struct {
	name     string
	dbType   string
	scanType string // a name scanTypes knows, or "" (any)
	nullable int8   // -1 unknown, 0 no, 1 yes
}

// errRowValue is returned for a value of a type the query cache does not
// keep (a driver returned something other than the standard driver
// values): the query runs, but is not cached.
var errRowValue = errors.New("cacheme: query cache: a column value of an unsupported type")

// readRowSet reads every row of rows and closes it.
func readRowSet(rows *sql.Rows) (*rowSet, error) {
	defer rows.Close()
	cts, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	rs := &rowSet{cols: make([]rowCol, len(cts))}
	for i, ct := range cts {
		c := rowCol{name: ct.Name(), dbType: ct.DatabaseTypeName(), nullable: -1}
		if t := ct.ScanType(); t != nil {
			if _, known := scanTypes[t.String()]; known {
				c.scanType = t.String()
			}
		}
		if n, ok := ct.Nullable(); ok {
			c.nullable = 0
			if n {
				c.nullable = 1
			}
		}
		rs.cols[i] = c
	}
	dest := make([]any, len(cts))
	for rows.Next() {
		vals := make([]any, len(cts))
		for i := range dest {
			dest[i] = &vals[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		for i, v := range vals {
			switch x := v.(type) {
			case nil, int64, float64, bool, []byte, string:
			case time.Time:
			case int:
				vals[i] = int64(x)
			case int32:
				vals[i] = int64(x)
			case float32:
				vals[i] = float64(x)
			default:
				return nil, fmt.Errorf("%w: column %s holds a %T", errRowValue, cts[i].Name(), v)
			}
		}
		rs.rows = append(rs.rows, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return rs, nil
}

// scanTypes are the scan types a replayed column may report: the types
// database/sql drivers commonly give, so that GORM scans maps (which
// follow the scan type) as it does from the database.
var scanTypes = func() map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for _, v := range []any{
		int64(0), int32(0), int16(0), int8(0), int(0), uint64(0), uint32(0), uint16(0), uint8(0), uint(0),
		float64(0), float32(0), true, "", []byte(nil), time.Time{}, sql.RawBytes(nil),
		sql.NullString{}, sql.NullInt64{}, sql.NullInt32{}, sql.NullInt16{}, sql.NullByte{},
		sql.NullFloat64{}, sql.NullBool{}, sql.NullTime{},
	} {
		t := reflect.TypeOf(v)
		m[t.String()] = t
	}
	m["interface {}"] = reflect.TypeFor[any]()
	return m
}()

// rowsCodec stores rowSets. It is bounded like MsgpackCodec: a length or
// count that exceeds what the bytes can hold is an error wrapping
// ErrCorrupt before anything is allocated for it.
type rowsCodec struct{}

// ID returns 3.
func (rowsCodec) ID() byte { return 3 }

// value kinds in the encoding.
const (
	rvNil byte = iota
	rvInt
	rvFloat
	rvFalse
	rvTrue
	rvBytes
	rvString
	rvTime
)

// Marshal encodes a *rowSet.
func (rowsCodec) Marshal(v any) ([]byte, error) {
	rs, ok := v.(*rowSet)
	if !ok || rs == nil {
		return nil, fmt.Errorf("rowsCodec: %T is not a *rowSet", v)
	}
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(rs.cols)))
	for _, c := range rs.cols {
		b = appendString(b, c.name)
		b = appendString(b, c.dbType)
		b = appendString(b, c.scanType)
		b = append(b, byte(c.nullable+1))
	}
	b = binary.AppendUvarint(b, uint64(len(rs.rows)))
	for _, row := range rs.rows {
		for _, v := range row {
			switch x := v.(type) {
			case nil:
				b = append(b, rvNil)
			case int64:
				b = binary.AppendVarint(append(b, rvInt), x)
			case float64:
				b = binary.BigEndian.AppendUint64(append(b, rvFloat), math.Float64bits(x))
			case bool:
				if x {
					b = append(b, rvTrue)
				} else {
					b = append(b, rvFalse)
				}
			case []byte:
				b = appendString(append(b, rvBytes), string(x))
			case string:
				b = appendString(append(b, rvString), x)
			case time.Time:
				b = append(b, rvTime)
				b = binary.AppendVarint(b, x.Unix())
				b = binary.AppendUvarint(b, uint64(x.Nanosecond()))
				switch loc := x.Location(); loc {
				case time.UTC:
					b = append(b, 0)
				case time.Local:
					b = append(b, 1)
				default:
					name, off := x.Zone()
					b = append(b, 2)
					b = appendString(b, name)
					b = binary.AppendVarint(b, int64(off))
				}
			default:
				return nil, fmt.Errorf("%w: %T", errRowValue, v)
			}
		}
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// rowsReader reads the encoding, bounded by its bytes.
type rowsReader struct {
	b   []byte
	err error
}

var errRowsCorrupt = fmt.Errorf("%w: query cache rows: truncated or malformed", ErrCorrupt)

func (r *rowsReader) fail() { r.err = errRowsCorrupt; r.b = nil }

func (r *rowsReader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *rowsReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rowsReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rowsReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// count reads a count of items that each take at least min bytes (at
// least one byte if min is 0: a count is never more than the bytes left).
func (r *rowsReader) count(min uint64) int {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b))/max(min, 1) {
		r.fail()
		return 0
	}
	return int(n)
}

// Unmarshal decodes into a **rowSet.
func (rowsCodec) Unmarshal(data []byte, v any) error {
	dst, ok := v.(**rowSet)
	if !ok {
		return fmt.Errorf("rowsCodec: cannot decode into %T", v)
	}
	r := &rowsReader{b: data}
	rs := &rowSet{}
	ncol := r.count(4)
	rs.cols = make([]rowCol, ncol)
	for i := range rs.cols {
		rs.cols[i] = rowCol{name: string(r.bytes()), dbType: string(r.bytes()), scanType: string(r.bytes())}
		rs.cols[i].nullable = int8(r.byte()) - 1
		if _, known := scanTypes[rs.cols[i].scanType]; rs.cols[i].scanType != "" && !known {
			r.fail()
		}
	}
	var nrow int
	if ncol == 0 {
		nrow = r.count(0)
		if nrow > 0 {
			r.fail()
		}
	} else {
		nrow = r.count(uint64(ncol))
	}
	if r.err != nil {
		return r.err
	}
	rs.rows = make([][]any, nrow)
	for i := range rs.rows {
		row := make([]any, ncol)
		for j := range row {
			switch k := r.byte(); k {
			case rvNil:
			case rvInt:
				row[j] = r.varint()
			case rvFloat:
				if len(r.b) < 8 {
					r.fail()
					break
				}
				row[j] = math.Float64frombits(binary.BigEndian.Uint64(r.b))
				r.b = r.b[8:]
			case rvFalse:
				row[j] = false
			case rvTrue:
				row[j] = true
			case rvBytes:
				row[j] = append([]byte(nil), r.bytes()...)
			case rvString:
				row[j] = string(r.bytes())
			case rvTime:
				sec, nsec := r.varint(), r.uvarint()
				if nsec >= 1e9 {
					r.fail()
					break
				}
				t := time.Unix(sec, int64(nsec))
				switch r.byte() {
				case 0:
					t = t.UTC()
				case 1:
					t = t.Local()
				case 2:
					name := string(r.bytes())
					off := r.varint()
					if off < -24*3600 || off > 24*3600 {
						r.fail()
						break
					}
					t = t.In(time.FixedZone(name, int(off)))
				default:
					r.fail()
				}
				row[j] = t
			default:
				r.fail()
			}
			if r.err != nil {
				return r.err
			}
		}
		rs.rows[i] = row
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: query cache rows: trailing bytes", ErrCorrupt)
	}
	*dst = rs
	return nil
}

// The replay driver: database/sql rows that come from a rowSet, handed to
// the connection through the query's context.

type rowSetKey struct{}

// replayDB opens the plugin's replay database once; Close closes it.
func (p *Plugin) replayDB() *sql.DB {
	p.rowsDBOnce.Do(func() { p.rowsDB = sql.OpenDB(replayConnector{}) })
	return p.rowsDB
}

// replayPool is a gorm.ConnPool whose queries return rs.
type replayPool struct {
	db *sql.DB
	rs *rowSet
}

func (r replayPool) PrepareContext(context.Context, string) (*sql.Stmt, error) {
	return nil, errReplayOnly
}

func (r replayPool) ExecContext(context.Context, string, ...any) (sql.Result, error) {
	return nil, errReplayOnly
}

func (r replayPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return r.db.QueryContext(context.WithValue(ctx, rowSetKey{}, r.rs), query, args...)
}

func (r replayPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return r.db.QueryRowContext(context.WithValue(ctx, rowSetKey{}, r.rs), query, args...)
}

var errReplayOnly = errors.New("cacheme: query cache replay: only queries")

type replayConnector struct{}

func (replayConnector) Connect(context.Context) (driver.Conn, error) { return replayConn{}, nil }
func (replayConnector) Driver() driver.Driver                        { return replayDriver{} }

type replayDriver struct{}

func (replayDriver) Open(string) (driver.Conn, error) { return replayConn{}, nil }

type replayConn struct{}

func (replayConn) Prepare(string) (driver.Stmt, error) { return nil, errReplayOnly }
func (replayConn) Close() error                        { return nil }
func (replayConn) Begin() (driver.Tx, error)           { return nil, errReplayOnly }

// CheckNamedValue accepts every argument: the query is not run.
func (replayConn) CheckNamedValue(*driver.NamedValue) error { return nil }

func (replayConn) QueryContext(ctx context.Context, _ string, _ []driver.NamedValue) (driver.Rows, error) {
	rs, _ := ctx.Value(rowSetKey{}).(*rowSet)
	if rs == nil {
		return nil, errReplayOnly
	}
	return &replayRows{rs: rs}, nil
}

// replayRows iterates a rowSet.
type replayRows struct {
	rs *rowSet
	i  int
}

func (r *replayRows) Columns() []string {
	out := make([]string, len(r.rs.cols))
	for i, c := range r.rs.cols {
		out[i] = c.name
	}
	return out
}

func (r *replayRows) Close() error { return nil }

func (r *replayRows) Next(dest []driver.Value) error {
	if r.i >= len(r.rs.rows) {
		return io.EOF
	}
	row := r.rs.rows[r.i]
	r.i++
	for i := range dest {
		dest[i] = row[i]
	}
	return nil
}

func (r *replayRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := scanTypes[r.rs.cols[i].scanType]; ok {
		return t
	}
	return reflect.TypeFor[any]()
}

func (r *replayRows) ColumnTypeDatabaseTypeName(i int) string { return r.rs.cols[i].dbType }

func (r *replayRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	switch r.rs.cols[i].nullable {
	case 0:
		return false, true
	case 1:
		return true, true
	}
	return false, false
}
