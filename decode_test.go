package cacheme

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// crashValue is 14 stored bytes (format 1, codec 1, then msgpack) that the
// msgpack package alone decodes into a []int by allocating 22 GB: an
// array32 header claiming 2,750,000,000 elements, followed by seven of
// them. Before checkMsgpack, a hit on it ended the process with "fatal
// error: out of memory".
var crashValue = []byte{1, 1, 0xdd, 0xa3, 0xe9, 0xab, 0x80, 1, 2, 3, 4, 5, 6, 7}

// slowValue is 10 bytes claiming 64M elements: a []int of 512 MiB, or
// 1 GiB for a slice of 16-byte elements, on every read.
var slowValue = []byte{1, 1, 0xdd, 0x04, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03}

// allocated returns the bytes f allocates (all goroutines: run alone).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A value that declares more than it holds is corrupt, found at once and
// with almost no allocation, whatever type it is decoded into.
func TestDecodeBounded(t *testing.T) {
	type withInts struct{ IDs []int }
	type pair struct{ A, B int64 }
	// A map header inside a struct: {"IDs": map32 claiming 4G entries}.
	mapInStruct := []byte{1, 1, 0x81, 0xa3, 'I', 'D', 's', 0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02}
	// The same for a bin32 and a str32 claiming 4 GiB.
	bin32 := []byte{1, 1, 0xc6, 0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c', 'd', 'e', 'f', 'g'}
	str32 := []byte{1, 1, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c', 'd', 'e', 'f', 'g'}
	cases := []struct {
		name   string
		decode func() error
	}{
		{"crash value as []int", func() error { _, err := decode[[]int](MsgpackCodec{}, crashValue); return err }},
		{"crash value as []pair", func() error { _, err := decode[[]pair](MsgpackCodec{}, crashValue); return err }},
		{"crash value as any", func() error { _, err := decode[any](MsgpackCodec{}, crashValue); return err }},
		{"slow value as []int", func() error { _, err := decode[[]int](MsgpackCodec{}, slowValue); return err }},
		{"slow value as []pair", func() error { _, err := decode[[]pair](MsgpackCodec{}, slowValue); return err }},
		{"map in struct", func() error { _, err := decode[map[string]map[int]int](MsgpackCodec{}, mapInStruct); return err }},
		{"map field of struct", func() error { _, err := decode[withInts](MsgpackCodec{}, mapInStruct); return err }},
		{"bin32", func() error { _, err := decode[[]byte](MsgpackCodec{}, bin32); return err }},
		{"str32", func() error { _, err := decode[string](MsgpackCodec{}, str32); return err }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			start := time.Now()
			n := allocated(func() { err = c.decode() })
			took := time.Since(start)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v; want ErrCorrupt", err)
			}
			if n > 1<<20 {
				t.Fatalf("allocated %d bytes; want under 1 MiB", n)
			}
			if took > time.Second {
				t.Fatalf("took %v", took)
			}
			avg := testing.AllocsPerRun(100, func() { _ = c.decode() })
			if avg > 4 {
				t.Fatalf("%.1f allocations per decode; want at most 4 (the error)", avg)
			}
		})
	}
}

// The crash value's claim is what msgpack alone would believe: its header
// declares 2.75e9 elements, 8 bytes each as ints.
func TestCrashValueClaim(t *testing.T) {
	d := msgpack.NewDecoder(bytes.NewReader(crashValue[2:]))
	n, err := d.DecodeArrayLen()
	if err != nil || n != 2_750_000_000 {
		t.Fatalf("DecodeArrayLen = %d, %v", n, err)
	}
	if len(crashValue) != 14 {
		t.Fatalf("crash value has %d bytes", len(crashValue))
	}
}

func TestCheckMsgpack(t *testing.T) {
	deep := func(n int, inner []byte) []byte { return append(bytes.Repeat([]byte{0x91}, n), inner...) }
	valid := map[string][]byte{
		"fixint":             {0x05},
		"negative fixint":    {0xff},
		"nil":                {0xc0},
		"true":               {0xc3},
		"empty fixstr":       {0xa0},
		"fixstr":             {0xa2, 'h', 'i'},
		"str8":               {0xd9, 2, 'h', 'i'},
		"str16":              {0xda, 0, 1, 'x'},
		"str32":              {0xdb, 0, 0, 0, 1, 'x'},
		"bin8":               {0xc4, 1, 0},
		"bin16":              {0xc5, 0, 0},
		"bin32":              {0xc6, 0, 0, 0, 2, 1, 2},
		"ext8":               {0xc7, 2, 5, 1, 2},
		"ext16":              {0xc8, 0, 1, 5, 1},
		"ext32":              {0xc9, 0, 0, 0, 0, 5},
		"fixext1":            {0xd4, 5, 1},
		"fixext16":           append([]byte{0xd8, 5}, make([]byte, 16)...),
		"float32":            {0xca, 0, 0, 0, 0},
		"float64":            {0xcb, 0, 0, 0, 0, 0, 0, 0, 0},
		"uint64":             {0xcf, 1, 2, 3, 4, 5, 6, 7, 8},
		"int16":              {0xd1, 1, 2},
		"empty array":        {0x90},
		"empty array32":      {0xdd, 0, 0, 0, 0},
		"fixarray":           {0x92, 1, 2},
		"array16":            {0xdc, 0, 2, 1, 2},
		"fixmap":             {0x81, 0xa1, 'k', 0x01},
		"map16":              {0xde, 0, 1, 1, 2},
		"map32":              {0xdf, 0, 0, 0, 1, 1, 2},
		"nested":             {0x92, 0x91, 0x90, 0x81, 0x01, 0x92, 0xc0, 0xc2},
		"max depth":          deep(msgpackMaxDepth, []byte{0x01}),
		"max depth, empty":   deep(msgpackMaxDepth, []byte{0x90}),
		"deep then siblings": append(deep(100, []byte{0x92, 1, 2}), []byte{}...),
		"array of many nils": append([]byte{0xdc, 0x01, 0x00}, bytes.Repeat([]byte{0xc0}, 256)...),
		"wide after deep":    {0x92, 0x91, 0x91, 0x91, 0x01, 0x93, 1, 2, 3},
		"map of arrays":      {0x82, 0x01, 0x91, 0x02, 0x03, 0x92, 0x04, 0x05},
	}
	for name, b := range valid {
		if err := checkMsgpack(b); err != nil {
			t.Errorf("%s (% x): %v", name, b, err)
		}
	}
	corrupt := map[string][]byte{
		"empty":               {},
		"0xc1":                {0xc1},
		"trailing":            {0x01, 0x02},
		"trailing after map":  {0x81, 1, 2, 3},
		"short fixstr":        {0xa3, 'a', 'b'},
		"short str8 length":   {0xd9},
		"short str16 length":  {0xda, 0},
		"str32 too long":      {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},
		"bin32 too long":      {0xc6, 0, 0, 1, 0, 1},
		"ext8 no type":        {0xc7, 0},
		"ext32 too long":      {0xc9, 0x7f, 0xff, 0xff, 0xff, 5},
		"fixext8 short":       {0xd7, 5, 1, 2},
		"float64 short":       {0xcb, 0, 0},
		"uint8 short":         {0xcc},
		"array count":         {0xdd, 0, 0, 0, 3, 1, 2},
		"array32 huge":        {0xdd, 0xff, 0xff, 0xff, 0xff},
		"map counts pairs":    {0x82, 1, 2, 3},
		"map32 huge":          {0xdf, 0xff, 0xff, 0xff, 0xff, 1, 2},
		"truncated element":   {0x92, 0x01},
		"nested claims":       {0x92, 0x9f, 1, 2},
		"siblings claim":      {0x93, 0x92, 1, 1},
		"too deep":            deep(msgpackMaxDepth+1, []byte{0x01}),
		"too deep, truncated": deep(100000, nil),
	}
	for name, b := range corrupt {
		if err := checkMsgpack(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s (% x): got %v; want ErrCorrupt", name, b, err)
		}
	}
}

// Every value msgpack encodes passes the check.
func TestCheckMsgpackAcceptsEncodings(t *testing.T) {
	type item struct {
		Name  string
		Tags  []string
		Attrs map[string]any
		At    time.Time
		Blob  []byte
		Next  *item
	}
	values := []any{
		0, -1, 1 << 40, uint64(1 << 63), 3.5, float32(1.5), "", strings.Repeat("x", 70000),
		[]byte(nil), make([]byte, 300), []int{}, make([]int, 70000), map[string]int{"a": 1},
		item{Name: "n", Tags: []string{"a"}, Attrs: map[string]any{"x": []any{1, "2", nil}},
			At: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC), Blob: []byte{1}, Next: &item{}},
		time.Unix(1<<40, 1),
	}
	for _, v := range values {
		b, err := MsgpackCodec{}.Marshal(v)
		if err != nil {
			t.Fatalf("Marshal(%T): %v", v, err)
		}
		if err := checkMsgpack(b); err != nil {
			t.Errorf("%T (%d bytes): %v", v, len(b), err)
		}
	}
}

// A value nested deeper than the decoder accepts is not stored: Marshal
// refuses it.
func TestMsgpackMarshalTooDeep(t *testing.T) {
	type node struct{ Next *node }
	var n *node
	for range msgpackMaxDepth + 1 {
		n = &node{Next: n}
	}
	if _, err := (MsgpackCodec{}).Marshal(n); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v; want an error wrapping ErrCorrupt", err)
	}
}

type panicCodec struct{}

func (panicCodec) ID() byte                    { return 99 }
func (panicCodec) Marshal(any) ([]byte, error) { panic("marshal boom") }
func (panicCodec) Unmarshal([]byte, any) error { panic("unmarshal boom") }

// A codec's panic is an error: ErrCorrupt when decoding.
func TestCodecPanics(t *testing.T) {
	_, err := decode[int](panicCodec{}, []byte{formatVersion, 99, 1})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "unmarshal boom") {
		t.Fatalf("decode: got %v; want ErrCorrupt with the panic value", err)
	}
	_, err = encode(panicCodec{}, 1)
	if err == nil || !strings.Contains(err.Error(), "marshal boom") {
		t.Fatalf("encode: got %v; want an error with the panic value", err)
	}
}

// BenchmarkCheckMsgpack measures the check alone, on the value of
// BenchmarkHit.
func BenchmarkCheckMsgpack(b *testing.B) {
	type book struct {
		ID        int64
		Title     string
		Authors   []string
		Price     float64
		Tags      map[string]string
		CreatedAt time.Time
	}
	data, err := msgpack.Marshal(book{4217, "The Go Programming Language",
		[]string{"Alan A. A. Donovan", "Brian W. Kernighan"}, 34.99,
		map[string]string{"lang": "go", "level": "intermediate", "format": "paperback"},
		time.Date(2015, 10, 26, 9, 30, 0, 123456789, time.UTC)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := checkMsgpack(data); err != nil {
			b.Fatal(err)
		}
	}
}
