package cacheme

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// formatVersion is the first byte of every stored value. The second byte is
// the codec's ID. A value with another version or codec is undecodable: it
// is treated as a miss and overwritten.
const formatVersion byte = 1

// Codec turns cached values into bytes and back. Implementations must be
// safe for concurrent use. Stored values come from Redis and may be
// corrupt: Unmarshal must fail, not trust them, and should never allocate
// much more than len(data) for them. A panic in Marshal or Unmarshal is
// recovered by the plugin and treated as an error (ErrCorrupt for
// Unmarshal).
type Codec interface {
	// ID identifies the codec in the stored format, so that values written
	// by another codec are recognised and recomputed. IDs 0 to 15 are
	// reserved for codecs of this package.
	ID() byte
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, a non-nil pointer.
	Unmarshal(data []byte, v any) error
}

// MsgpackCodec encodes values with MessagePack
// (github.com/vmihailenco/msgpack/v5). It is the default codec: it is the
// fastest of the codecs measured by BenchmarkCodec and keeps the
// difference between nil and empty slices and maps.
//
// The msgpack package trusts the lengths a value declares (a 7-byte value
// can make it allocate gigabytes for a slice), so Unmarshal first checks
// the structure (see checkMsgpack): data must be exactly one object, every
// declared length must fit in what follows and arrays and maps may nest at
// most msgpackMaxDepth deep. Decoding then allocates at most about
// len(data) times the size of the largest element type of v. Marshal
// refuses a value nested deeper, which could be stored but never read.
type MsgpackCodec struct{}

// ID returns 1.
func (MsgpackCodec) ID() byte { return 1 }

// Marshal encodes v as MessagePack.
func (MsgpackCodec) Marshal(v any) ([]byte, error) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, err
	}
	if err := checkMsgpack(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Unmarshal decodes MessagePack data into v. Malformed data (see
// MsgpackCodec) is an error wrapping ErrCorrupt.
func (MsgpackCodec) Unmarshal(data []byte, v any) error {
	if err := checkMsgpack(data); err != nil {
		return err
	}
	return msgpack.Unmarshal(data, v)
}

// msgpackMaxDepth bounds the nesting of arrays and maps in a MessagePack
// value, which the msgpack package decodes recursively.
const msgpackMaxDepth = 1000

var (
	errMsgpackTruncated = fmt.Errorf("%w: msgpack: truncated or declares more than it holds", ErrCorrupt)
	errMsgpackTrailing  = fmt.Errorf("%w: msgpack: trailing bytes after the value", ErrCorrupt)
	errMsgpackDepth     = fmt.Errorf("%w: msgpack: nested more than %d deep", ErrCorrupt, msgpackMaxDepth)
	errMsgpackCode      = fmt.Errorf("%w: msgpack: invalid code 0xc1", ErrCorrupt)
)

// checkMsgpack reports whether b is exactly one well-formed MessagePack
// object: every str, bin and ext fits in the bytes left, every array or map
// declares no more elements than bytes are left (each takes at least one),
// nesting is at most msgpackMaxDepth deep and nothing follows the object.
// It walks b once, without recursion, and allocates nothing for values
// nested up to 64 deep. Its errors wrap ErrCorrupt.
func checkMsgpack(b []byte) error {
	var buf [64]uint64
	open := buf[:0]   // objects still to read in each open array or map, innermost last
	need := uint64(1) // objects still to read in all
	i := 0
	for need > 0 {
		for len(open) > 0 && open[len(open)-1] == 0 {
			open = open[:len(open)-1]
		}
		if len(open) > 0 {
			open[len(open)-1]--
		}
		need--
		if i >= len(b) {
			return errMsgpackTruncated
		}
		c := b[i]
		i++
		var skip, n uint64 // payload bytes; child objects
		switch {
		case c <= 0x7f || c >= 0xe0: // positive and negative fixint
			continue
		case c <= 0x8f: // fixmap
			n = 2 * uint64(c&0x0f)
		case c <= 0x9f: // fixarray
			n = uint64(c & 0x0f)
		case c <= 0xbf: // fixstr
			skip = uint64(c & 0x1f)
		default:
			// Width of the length that follows c (str, bin, ext, array,
			// map), or of the payload of fixed-size types.
			var w int
			switch c {
			case 0xc0, 0xc2, 0xc3: // nil, false, true
				continue
			case 0xc1:
				return errMsgpackCode
			case 0xc4, 0xd9: // bin8, str8
				w = 1
			case 0xc5, 0xda: // bin16, str16
				w = 2
			case 0xc6, 0xdb: // bin32, str32
				w = 4
			case 0xc7: // ext8: length, type, data
				w, skip = 1, 1
			case 0xc8: // ext16
				w, skip = 2, 1
			case 0xc9: // ext32
				w, skip = 4, 1
			case 0xcc, 0xd0: // uint8, int8
				skip = 1
			case 0xcd, 0xd1: // uint16, int16
				skip = 2
			case 0xca, 0xce, 0xd2: // float32, uint32, int32
				skip = 4
			case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
				skip = 8
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16: type, data
				skip = 1 + 1<<(c-0xd4)
			case 0xdc, 0xde: // array16, map16
				w = 2
			case 0xdd, 0xdf: // array32, map32
				w = 4
			}
			if w > 0 {
				if len(b)-i < w {
					return errMsgpackTruncated
				}
				var l uint64
				switch w {
				case 1:
					l = uint64(b[i])
				case 2:
					l = uint64(binary.BigEndian.Uint16(b[i:]))
				default:
					l = uint64(binary.BigEndian.Uint32(b[i:]))
				}
				i += w
				switch c {
				case 0xdc, 0xdd:
					n = l
				case 0xde, 0xdf:
					n = 2 * l
				default:
					skip += l
				}
			}
		}
		left := uint64(len(b) - i)
		if skip > left {
			return errMsgpackTruncated
		}
		i += int(skip)
		if n == 0 {
			continue
		}
		if need > left || n > left-need { // each object takes at least a byte
			return errMsgpackTruncated
		}
		if len(open) >= msgpackMaxDepth {
			return errMsgpackDepth
		}
		open = append(open, n)
		need += n
	}
	if i != len(b) {
		return errMsgpackTrailing
	}
	return nil
}

// JSONCodec encodes values with encoding/json. It is readable with
// redis-cli but slower than MsgpackCodec, and it follows encoding/json's
// rules (unexported fields are dropped, time zones become offsets).
type JSONCodec struct{}

// ID returns 2.
func (JSONCodec) ID() byte { return 2 }

// Marshal encodes v as JSON.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON data into v.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// encode returns the stored form of v: version byte, codec ID, payload.
func encode(c Codec, v any) ([]byte, error) {
	payload, err := marshal(c, v)
	if err != nil {
		return nil, fmt.Errorf("cacheme: encode: %w", err)
	}
	out := make([]byte, 2, 2+len(payload))
	out[0], out[1] = formatVersion, c.ID()
	return append(out, payload...), nil
}

// decode reads a stored value into a new R. Any failure wraps ErrCorrupt.
func decode[R any](c Codec, data []byte) (R, error) {
	var r R
	switch {
	case len(data) < 2:
		return r, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(data))
	case data[0] != formatVersion:
		return r, fmt.Errorf("%w: format version %d, want %d", ErrCorrupt, data[0], formatVersion)
	case data[1] != c.ID():
		return r, fmt.Errorf("%w: codec %d, want %d", ErrCorrupt, data[1], c.ID())
	}
	if err := unmarshal(c, data[2:], &r); err != nil {
		var zero R
		if errors.Is(err, ErrCorrupt) {
			return zero, err
		}
		return zero, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return r, nil
}

// marshal runs c.Marshal, turning a panic into an error.
func marshal(c Codec, v any) (b []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			b, err = nil, fmt.Errorf("codec %d panicked: %v", c.ID(), p)
		}
	}()
	return c.Marshal(v)
}

// unmarshal runs c.Unmarshal, turning a panic into an error wrapping
// ErrCorrupt.
func unmarshal(c Codec, data []byte, v any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: codec %d panicked: %v", ErrCorrupt, c.ID(), p)
		}
	}()
	return c.Unmarshal(data, v)
}
