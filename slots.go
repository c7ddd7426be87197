package cacheme

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// Batching keys for the multi-key scripts: every script call's keys must
// be served by one server, and on Cluster lie in one slot.

// maxBatchKeys bounds the keys of one script call, so that one script never
// blocks Redis for long.
const maxBatchKeys = 1000

// keySlot returns the Redis Cluster slot of key: CRC16 (XMODEM) of its hash
// tag (the part between the first '{' and the next '}', if not empty) or
// of the whole key, modulo 16384.
func keySlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % 16384
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the hash of
// Redis Cluster's key slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// batches splits keys (by index) into the key lists of script calls: on a
// single server (a client or failover client) in order, at most
// maxBatchKeys each; on Cluster grouped by slot; on a Ring, whose sharding
// is the client's own, one key per call.
func (p *Plugin) batches(keys []string) [][]int {
	var out [][]int
	add := func(idx []int) {
		for len(idx) > maxBatchKeys {
			out = append(out, idx[:maxBatchKeys:maxBatchKeys])
			idx = idx[maxBatchKeys:]
		}
		if len(idx) > 0 {
			out = append(out, idx)
		}
	}
	switch p.rdb.(type) {
	case *redis.Client:
		all := make([]int, len(keys))
		for i := range all {
			all[i] = i
		}
		add(all)
	case *redis.ClusterClient:
		bySlot := map[uint16][]int{}
		var order []uint16
		for i, k := range keys {
			s := keySlot(k)
			if _, seen := bySlot[s]; !seen {
				order = append(order, s)
			}
			bySlot[s] = append(bySlot[s], i)
		}
		for _, s := range order {
			add(bySlot[s])
		}
	default:
		for i := range keys {
			out = append(out, []int{i})
		}
	}
	return out
}

// oneServer reports whether every key lives on one server, so that a
// script may touch keys of any slots (see storeScript).
func (p *Plugin) oneServer() bool {
	_, ok := p.rdb.(*redis.Client)
	return ok
}
