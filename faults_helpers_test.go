//go:build faults

package cacheme_test

// Helpers of the fault suite (faults_test.go, faults_cluster_test.go): own
// redis-server processes, a TCP proxy that can swallow replies, and a
// history checker. Run with: go test -tags faults -run Fault .

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

// redisProc is a redis-server process a test started on its own port; it
// is stopped (by pid) after the test.
type redisProc struct {
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// redisServerPath returns the redis-server binary; the suite fails without
// one (it never skips).
func redisServerPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("the fault suite needs redis-server in PATH: %v", err)
	}
	return path
}

// freePort returns a loopback port nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ok(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// portFree reports whether port can be listened on.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// startRedis starts a redis-server on port (no persistence, state in a
// temp dir) and waits until it answers PING.
func startRedis(t testing.TB, port int, extra ...string) *redisProc {
	t.Helper()
	path := redisServerPath(t)
	dir := t.TempDir()
	args := append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--daemonize", "no",
	}, extra...)
	r := &redisProc{port: port, dir: dir, cmd: exec.Command(path, args...), done: make(chan struct{})}
	ok(t, r.cmd.Start())
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(r.stop) // registered after TempDir: runs before the dir is removed
	c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		select {
		case <-r.done:
			t.Fatalf("redis-server on port %d exited: %s", port, r.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d does not answer: %s", port, r.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

func (r *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// log returns the end of the server's log.
func (r *redisProc) log() string {
	out, _ := exec.Command("tail", "-n", "20", filepath.Join(r.dir, "redis.log")).Output()
	return string(out)
}

// stop kills the process (resuming it first if it is stopped) and waits
// for it.
func (r *redisProc) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT)
	_ = r.cmd.Process.Kill()
	<-r.done
}

// pause freezes the server (SIGSTOP); resume thaws it (SIGCONT).
func (r *redisProc) pause(t testing.TB) {
	t.Helper()
	ok(t, r.cmd.Process.Signal(syscall.SIGSTOP))
}

func (r *redisProc) resume(t testing.TB) {
	t.Helper()
	ok(t, r.cmd.Process.Signal(syscall.SIGCONT))
}

// client returns a client of the server with short timeouts and no
// client-side retries, closed after the test.
func (r *redisProc) client(t testing.TB, timeout time.Duration) *redis.Client {
	t.Helper()
	return dialRedis(t, r.addr(), timeout)
}

func dialRedis(t testing.TB, addr string, timeout time.Duration) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout})
	t.Cleanup(func() { c.Close() })
	return c
}

// replyDropper is a TCP proxy to a Redis server: it always forwards the
// requests, and while drop is set it swallows the server's replies.
type replyDropper struct {
	ln       net.Listener
	upstream string
	drop     atomic.Bool
	swallow  atomic.Int64 // reply bytes swallowed

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startDropper(t testing.TB, upstream string) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ok(t, err)
	d := &replyDropper{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	d.wg.Add(1)
	go d.accept()
	t.Cleanup(d.close)
	return d
}

func (d *replyDropper) addr() string { return d.ln.Addr().String() }

func (d *replyDropper) accept() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", d.upstream)
		if err != nil {
			c.Close()
			continue
		}
		d.mu.Lock()
		d.conns[c], d.conns[s] = true, true
		d.mu.Unlock()
		d.wg.Add(2)
		go func() { // requests: always forwarded
			defer d.wg.Done()
			_, _ = io.Copy(s, c)
			s.Close()
			c.Close()
		}()
		go func() { // replies: forwarded unless dropping
			defer d.wg.Done()
			defer c.Close()
			defer s.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					if d.drop.Load() {
						d.swallow.Add(int64(n))
					} else if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// reset closes every proxied connection (both sides).
func (d *replyDropper) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.Close()
	}
	d.conns = map[net.Conn]bool{}
}

func (d *replyDropper) close() {
	d.ln.Close()
	d.reset()
	d.wg.Wait()
}

// history checks linearizability-lite on rows whose name is a version
// counter: a read that starts after the Update of version v returned must
// not return a version older than v.
type history struct {
	committed  []atomic.Int64 // per row: the highest version whose Update returned
	ops        atomic.Int64   // reads checked
	writes     atomic.Int64   // updates committed
	violations atomic.Int64
	errors     atomic.Int64 // reads that failed (not checked)

	mu       sync.Mutex
	examples []string
}

func newHistory(rows int) *history { return &history{committed: make([]atomic.Int64, rows)} }

// read checks one read of row through f and reports whether it was stale.
func (h *history) read(ctx context.Context, row int, f func(context.Context) (int64, error)) bool {
	before := h.committed[row].Load()
	v, err := f(ctx)
	if err != nil {
		h.errors.Add(1)
		return false
	}
	h.ops.Add(1)
	if v < before {
		h.violations.Add(1)
		h.mu.Lock()
		if len(h.examples) < 10 {
			h.examples = append(h.examples, fmt.Sprintf("row %d: read version %d after version %d was committed", row, v, before))
		}
		h.mu.Unlock()
		return true
	}
	return false
}

// wrote records that the Update of version v of row returned.
func (h *history) wrote(row int, v int64) {
	h.writes.Add(1)
	for {
		cur := h.committed[row].Load()
		if v <= cur || h.committed[row].CompareAndSwap(cur, v) {
			return
		}
	}
}

func (h *history) sample() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.examples...)
}

// versionReader memoizes reading the version (the name) of user id under
// the key "fver:<id>", in the group "User:<id>" that writes invalidate.
func versionReader(t testing.TB, p *cacheme.Plugin, db *gorm.DB) func(context.Context, uint) (int64, error) {
	t.Helper()
	return mustWrap(t, p, cacheme.Spec[uint, int64]{
		Key:    func(id uint) string { return fmt.Sprintf("fver:%d", id) },
		Groups: func(id uint, _ int64) []string { return []string{fmt.Sprintf("User:%d", id)} },
		Tag:    "fault-version",
	}, func(ctx context.Context, id uint) (int64, error) {
		return dbVersion(ctx, db, id)
	})
}

// dbVersion reads the version of user id from the database.
func dbVersion(ctx context.Context, db *gorm.DB, id uint) (int64, error) {
	var u User
	if err := db.WithContext(ctx).Where("id = ?", id).Take(&u).Error; err != nil {
		return 0, err
	}
	return strconv.ParseInt(u.Name, 10, 64)
}

// writeVersion sets the version of user id through GORM, so that the
// plugin invalidates the group "User:<id>" after the COMMIT.
func writeVersion(ctx context.Context, db *gorm.DB, id uint, v int64) error {
	return db.WithContext(ctx).Model(&User{ID: id}).Update("name", strconv.FormatInt(v, 10)).Error
}

// createVersionRows creates n users at version 0 and returns their ids.
func createVersionRows(t testing.TB, db *gorm.DB, n int) []uint {
	t.Helper()
	ids := make([]uint, n)
	for i := range ids {
		u := User{Name: "0"}
		ok(t, db.Create(&u).Error)
		ids[i] = u.ID
	}
	return ids
}

// nameReader memoizes reading the name of user id under "<key>:<id>", in
// the group "User:<id>", and counts its computations.
func nameReader(t testing.TB, p *cacheme.Plugin, db *gorm.DB, key string, calls *atomic.Int64) func(context.Context, uint) (string, error) {
	t.Helper()
	return mustWrap(t, p, cacheme.Spec[uint, string]{
		Key:    func(id uint) string { return fmt.Sprintf("%s:%d", key, id) },
		Groups: func(id uint, _ string) []string { return []string{fmt.Sprintf("User:%d", id)} },
		Tag:    "fault-" + key,
	}, func(ctx context.Context, id uint) (string, error) {
		calls.Add(1)
		return userName(db, id)(ctx)
	})
}

// warmName computes and caches the name of id and checks that the next
// read is a hit.
func warmName(t testing.TB, f func(context.Context, uint) (string, error), calls *atomic.Int64, id uint, want string) {
	t.Helper()
	v, err := f(bg, id)
	ok(t, err)
	equals(t, v, want)
	before := calls.Load()
	v, err = f(bg, id)
	ok(t, err)
	equals(t, v, want)
	if calls.Load() != before {
		t.Fatalf("user %d: the warm read recomputed", id)
	}
}

// keptReports counts the reports of invalidations not delivered but kept
// by the outbox.
func keptReports(rec *errRecorder) int {
	n := 0
	for _, err := range rec.All() {
		if s := err.Error(); strings.Contains(s, "not delivered") && strings.Contains(s, "the outbox keeps it") {
			n++
		}
	}
	return n
}

// lostReports counts the reports of invalidations not delivered.
func lostReports(rec *errRecorder) int {
	n := 0
	for _, err := range rec.All() {
		if strings.Contains(err.Error(), "not delivered") {
			n++
		}
	}
	return n
}

// replayAll runs Replay until the outbox is empty (within timeout).
func replayAll(t testing.TB, p *cacheme.Plugin, db *gorm.DB, timeout time.Duration) int {
	t.Helper()
	total := 0
	deadline := time.Now().Add(timeout)
	for outboxRows(t, db) > 0 {
		n, err := p.Replay(bg)
		total += n
		if time.Now().After(deadline) {
			t.Fatalf("the outbox still holds %d rows after %v of replays (last error: %v)", outboxRows(t, db), timeout, err)
		}
		if err != nil || n == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return total
}

// lines delivers the lines r writes, until it ends.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}
