//go:build browser

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/testenv"
)

// The end-to-end test in a real headless browser (build tag browser; CI
// runs it in a step of its own, after installing Debian's chromium). The
// browser is CACHEME_CHROMIUM, or /usr/bin/chromium: a missing one fails
// the test. With CACHEME_SCREENSHOTS naming a folder, a full-page PNG of
// each page is saved there.

// chromium returns the browser's path, failing the test without one.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("CACHEME_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("no browser at %s (set CACHEME_CHROMIUM, or apt-get install -y chromium): %v", path, err)
	}
	return path
}

// browser starts a headless chromium that answers basic-auth challenges
// with the credentials creds holds (none: it cancels them), and fails the
// test if a page opens a dialog.
func browser(t *testing.T, creds *atomic.Pointer[[2]string]) context.Context {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	var ctx context.Context
	var cancelCtx context.CancelFunc
	// The listener runs in the tab's loop: it only starts goroutines.
	ctx, cancelCtx = chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		switch ev := ev.(type) {
		case *fetch.EventRequestPaused:
			go func() {
				_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
			}()
		case *fetch.EventAuthRequired:
			resp := &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth}
			if c := creds.Load(); c != nil {
				resp = &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials, Username: c[0], Password: c[1]}
			}
			go func() {
				_, _ = chromedp.Call(ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: resp})
			}()
		case *page.EventJavascriptDialogOpening:
			t.Errorf("a script ran: it opened a dialog %q", ev.Message)
			go func() { _, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{}) }()
		}
	}))
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	yes := true
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: &yes}); err != nil {
		t.Fatalf("starting %s: %v", chromium(t), err)
	}
	return ctx
}

// shot saves a full-page PNG of the current page when CACHEME_SCREENSHOTS
// names a folder.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("CACHEME_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// act runs steps, each bounded by the test's patience.
func act(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// text returns the text of the element sel.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

var spaces = regexp.MustCompile(`\s`)

// fleetMisses reads the misses of all processes on the overview.
func fleetMisses(t *testing.T, ctx context.Context) int {
	t.Helper()
	cell := text(t, ctx, "#fleet-total tr:nth-child(2) td:nth-child(2)")
	n, err := strconv.Atoi(spaces.ReplaceAllString(cell, ""))
	if err != nil {
		t.Fatalf("misses cell %q: %v", cell, err)
	}
	return n
}

func TestBrowser(t *testing.T) {
	url, rdb := redisURL(t)
	dbs := dbURLs(t)
	db := dbs["sqlite"]
	if pg, ok := dbs["postgres"]; ok {
		db = pg
	}
	prefix := testenv.Prefix()
	env := []string{"CACHEME_REDIS=" + url, "CACHEME_DB=" + db, "CACHEME_PREFIX=" + prefix, "CACHEME_ADMIN_USER=ann", "CACHEME_ADMIN_PASSWORD=s3cret"}
	cli(t, env, "migrate", "up").ok(t)

	p := cacheme.New(cacheme.Settings{Redis: rdb, Prefix: prefix, NoStale: true, StatsInterval: -1})
	t.Cleanup(func() { _ = p.Close(bg) })
	books := memo(t, p, "books")
	books.fill(t, 5)
	script := memo(t, p, "<script>window.pwned=1</script>")
	script.fill(t, 1)
	if err := p.PublishStats(bg); err != nil {
		t.Fatal(err)
	}
	base, stop := serveAdmin(t, env)

	var creds atomic.Pointer[[2]string]
	ctx := browser(t, &creds)

	// 1. Signing in: refused without credentials, admitted with them.
	act(t, ctx, "GET / without credentials", chromedp.Navigate(base+"/"))
	if body := text(t, ctx, "body"); !strings.Contains(body, "authentication required") {
		t.Fatalf("without credentials the page shows %q", body)
	}
	creds.Store(&[2]string{"ann", "s3cret"})
	act(t, ctx, "sign in", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#fleet-total")))
	before := fleetMisses(t, ctx)
	if before != 6 {
		t.Fatalf("fleet misses %d; want the test's 6", before)
	}

	// 2. Memoized calls made by another process change the numbers.
	r := cli(t, env, "demo").ok(t)
	if !strings.Contains(r.out, "every cached read matched the database after every write") {
		t.Fatalf("demo: %s", r.out)
	}
	act(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#fleet-total")))
	after := fleetMisses(t, ctx)
	if after <= before {
		t.Fatalf("fleet misses %d after the demo; want more than %d", after, before)
	}
	if procs := text(t, ctx, "body"); !strings.Contains(procs, "2 processes published") || !strings.Contains(procs, "booksOf") {
		t.Fatalf("overview after the demo: %s", procs)
	}
	shot(t, ctx, "overview")

	// 3. Browse to an entry.
	act(t, ctx, "browse", chromedp.Click(chromedp.CSS(`nav a[href="browse"]`)), chromedp.WaitVisible(chromedp.CSS(`input[name="match"]`)),
		chromedp.SetValue(chromedp.CSS(`input[name="tag"]`), "books"),
		chromedp.Submit(chromedp.CSS(`input[name="tag"]`)), chromedp.WaitVisible(chromedp.CSS("#entries")))
	shot(t, ctx, "browse")
	act(t, ctx, "open books:1", chromedp.Click(chromedp.CSS(`a[href="entry?key=books%3a1"]`)), chromedp.WaitVisible(chromedp.CSS("#entry")))
	if got := text(t, ctx, "pre"); got != "1" {
		t.Fatalf("preview %q; want 1", got)
	}
	if !strings.Contains(text(t, ctx, "#entry"), "valid") {
		t.Fatal("books:1 is not shown valid")
	}
	shot(t, ctx, "entry")

	// 4. Invalidate it through the form: gone from Redis, present in History.
	act(t, ctx, "invalidate books:1", chromedp.Click(chromedp.CSS(`form[action="invalidate"] button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text(t, ctx, ".flash"); got != `Invalidated key "books:1": 1 entry.` {
		t.Fatalf("flash %q", got)
	}
	if in, err := p.Inspect(bg, "books:1"); err != nil || in.State != cacheme.EntryAbsent {
		t.Fatalf("books:1 in Redis after the form: %+v, %v", in, err)
	}
	if h, err := rdb.HExists(bg, prefix+"books:1", "v:base").Result(); err != nil || h {
		t.Fatalf("the value of books:1 is still in Redis (%v, %v)", h, err)
	}
	act(t, ctx, "history", chromedp.Click(chromedp.CSS(`nav a[href="history"]`)), chromedp.WaitVisible(chromedp.CSS("#history")))
	if hist := text(t, ctx, "#history"); !strings.Contains(hist, "ann") || !strings.Contains(hist, "books:1") {
		t.Fatalf("History: %s", hist)
	}
	shot(t, ctx, "history")

	// 5. A pattern: its dry run, then its confirmation; the whole
	// namespace needs the checkbox.
	act(t, ctx, "pattern dry run", chromedp.Click(chromedp.CSS(`nav a[href="./"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form:has(input[value="pattern"]) button`)),
		chromedp.SetValue(chromedp.CSS(`form:has(input[value="pattern"]) input[name="target"]`), "books:*"),
		chromedp.Click(chromedp.CSS(`form:has(input[value="pattern"]) button`)), chromedp.WaitVisible(chromedp.CSS("#count")))
	if got := text(t, ctx, "#count"); got != "4" {
		t.Fatalf("dry run count %q; want 4 (books:1 is gone)", got)
	}
	shot(t, ctx, "pattern")
	if in, _ := p.Inspect(bg, "books:2"); in.State != cacheme.EntryValid {
		t.Fatal("the dry run invalidated books:2")
	}
	act(t, ctx, "confirm", chromedp.Click(chromedp.CSS(`form button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text(t, ctx, ".flash"); got != `Invalidated pattern "books:*": 4 entries.` {
		t.Fatalf("flash %q", got)
	}
	for i := range 5 {
		if in, _ := p.Inspect(bg, "books:"+strconv.Itoa(i)); in.State != cacheme.EntryAbsent {
			t.Fatalf("books:%d after the pattern: %v", i, in.State)
		}
	}
	act(t, ctx, "whole namespace", chromedp.SetValue(chromedp.CSS(`form:has(input[value="pattern"]) input[name="target"]`), "*"),
		chromedp.Click(chromedp.CSS(`form:has(input[value="pattern"]) button`)), chromedp.WaitVisible(chromedp.CSS(`input[name="all"]`)))
	if warn := text(t, ctx, ".warn"); !strings.Contains(warn, "covers the whole namespace") {
		t.Fatalf("no warning for *: %q", warn)
	}
	act(t, ctx, "confirm *", chromedp.Click(chromedp.CSS(`input[name="all"]`)), chromedp.Click(chromedp.CSS(`form button`)),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text(t, ctx, ".flash"); !strings.HasPrefix(got, `Invalidated pattern "*": `) {
		t.Fatalf("flash %q", got)
	}
	if in, _ := p.Inspect(bg, "<script>window.pwned=1</script>:0"); in.State != cacheme.EntryAbsent {
		t.Fatalf("* left %+v", in)
	}

	// 6. A <script> key renders inert.
	script.fill(t, 1)
	act(t, ctx, "browse the <script> key", chromedp.Navigate(base+"/browse?tag="+urlQuery("<script>window.pwned=1</script>")), chromedp.WaitVisible(chromedp.CSS("#entries")))
	pwned, scripts := eval[bool](t, ctx, `window.pwned === 1`), eval[int](t, ctx, `document.scripts.length`)
	if pwned || scripts != 0 {
		t.Fatalf("the key ran (pwned %v) or made %d script elements", pwned, scripts)
	}
	if got := text(t, ctx, "#entries code"); got != "<script>window.pwned=1</script>:0" {
		t.Fatalf("the key shows as %q", got)
	}
	act(t, ctx, "its entry", chromedp.Click(chromedp.CSS(`#entries a`)), chromedp.WaitVisible(chromedp.CSS("#entry")))
	pwned, scripts = eval[bool](t, ctx, `window.pwned === 1`), eval[int](t, ctx, `document.scripts.length`)
	if pwned || scripts != 0 || !strings.Contains(text(t, ctx, "h2"), "<script>window.pwned=1</script>:0") {
		t.Fatalf("the entry page of the <script> key: pwned %v, %d scripts", pwned, scripts)
	}
	shot(t, ctx, "script-key")
	if err := stop(); err != nil {
		t.Fatalf("admin: %v", err)
	}

}

func urlQuery(s string) string {
	r := strings.NewReplacer("<", "%3C", ">", "%3E", "*", "%2A", " ", "%20", "=", "%3D", "(", "%28", ")", "%29", "/", "%2F")
	return r.Replace(s)
}
