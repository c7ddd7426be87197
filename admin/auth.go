package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Action is what a request asks the handler to do. Options.Authorize is
// asked about each one, and Options.ReadOnly refuses every action whose
// Mutates method reports true. Later versions may add actions: an
// authorizer should refuse the ones it does not know.
type Action string

// The actions.
const (
	// ActionView is showing the overview (counters of this process and
	// of all processes, tags, the recent log) and the History (GET and
	// HEAD / and /history).
	ActionView Action = "view"

	// ActionBrowse is listing the cached entries and showing one, with a
	// preview of its value (GET /browse and /entry). It reads what the
	// cache holds: an authorizer may keep it from those who may only
	// view the counters.
	ActionBrowse Action = "browse"

	// ActionInvalidateKey is invalidating one cache key
	// (POST /invalidate with kind=key).
	ActionInvalidateKey Action = "invalidate-key"

	// ActionInvalidateGroup is invalidating every member of one
	// invalidation group (POST /invalidate with kind=group).
	ActionInvalidateGroup Action = "invalidate-group"

	// ActionInvalidateTag is invalidating every entry of one tag
	// (POST /invalidate with kind=tag).
	ActionInvalidateTag Action = "invalidate-tag"

	// ActionInvalidateNode is invalidating every entry of one node type
	// (POST /invalidate with kind=node).
	ActionInvalidateNode Action = "invalidate-node"

	// ActionInvalidatePattern is counting, then invalidating, the
	// entries whose keys match a pattern (POST /invalidate with
	// kind=pattern); the dry run asks for it too.
	ActionInvalidatePattern Action = "invalidate-pattern"
)

// Mutates reports whether a changes state: every action but ActionView and
// ActionBrowse, including any action this version does not know.
func (a Action) Mutates() bool { return a != ActionView && a != ActionBrowse }

// actionOf maps the kind field of a POST to its action.
var actionOf = map[string]Action{
	kindKey:     ActionInvalidateKey,
	kindGroup:   ActionInvalidateGroup,
	kindTag:     ActionInvalidateTag,
	kindNode:    ActionInvalidateNode,
	kindPattern: ActionInvalidatePattern,
}

// BasicAuth is one set of HTTP basic-auth credentials; see
// Options.BasicAuth.
type BasicAuth struct {
	// User and Password are the credentials; both are required. They
	// are compared in constant time.
	User, Password string

	// Realm is the realm the browser shows when it asks for them. If
	// empty, defaults to "cacheme admin".
	Realm string
}

// ErrNoAuth is returned (wrapped) by New, and shown by the handler Handler
// returns, when Options says nothing about how requests are authorized:
// none of Authorize, BasicAuth and InsecureNoAuth is set.
var ErrNoAuth = errors.New("admin: no authorization configured: set Options.Authorize, Options.BasicAuth or (only behind the application's own checks) Options.InsecureNoAuth")

// defaultAllowedHosts are the Host names a handler answers when
// Options.AllowedHosts is empty: loopback only, with any port. (Not
// exported: no other package can widen it.)
var defaultAllowedHosts = []string{"localhost", "127.0.0.1", "[::1]"}

// csrfKeySize is the size of a generated CSRF key and the least size of
// Options.CSRFKey.
const csrfKeySize = 32

// authorizer decides who a request comes from and whether it may do a.
type authorizer struct {
	authorize func(*http.Request, Action) (string, error)
	basic     *BasicAuth
	user      [sha256.Size]byte // of basic.User
	password  [sha256.Size]byte // of basic.Password
	insecure  bool
}

func newAuthorizer(o Options) (authorizer, error) {
	n := 0
	for _, set := range []bool{o.Authorize != nil, o.BasicAuth != nil, o.InsecureNoAuth} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return authorizer{}, ErrNoAuth
	case n > 1:
		return authorizer{}, errors.New("admin: set only one of Options.Authorize, Options.BasicAuth and Options.InsecureNoAuth")
	}
	a := authorizer{authorize: o.Authorize, insecure: o.InsecureNoAuth}
	if b := o.BasicAuth; b != nil {
		if b.User == "" || b.Password == "" {
			return authorizer{}, errors.New("admin: Options.BasicAuth needs a User and a Password")
		}
		if strings.ContainsRune(b.User, ':') {
			return authorizer{}, errors.New("admin: Options.BasicAuth.User may not contain ':'")
		}
		c := *b
		if c.Realm == "" {
			c.Realm = "cacheme admin"
		}
		if err := checkText("Options.BasicAuth.Realm", c.Realm); err != nil || strings.ContainsAny(c.Realm, `"\`) {
			return authorizer{}, fmt.Errorf("admin: Options.BasicAuth.Realm %q: want printable text without quotes or backslashes", c.Realm)
		}
		a.basic = &c
		a.user = sha256.Sum256([]byte(c.User))
		a.password = sha256.Sum256([]byte(c.Password))
	}
	return a, nil
}

// check authorizes r for action. If it refuses, it has answered the
// request (401 or 403) and returns false.
func (a *authorizer) check(w http.ResponseWriter, r *http.Request, action Action) (actor string, ok bool) {
	switch {
	case a.insecure:
		return "", true
	case a.basic != nil:
		if user, pass, ok := r.BasicAuth(); ok {
			// Hashing first makes the comparison's time independent of
			// the lengths too; both halves are always compared.
			u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
			if subtle.ConstantTimeCompare(u[:], a.user[:])&subtle.ConstantTimeCompare(p[:], a.password[:]) == 1 {
				return user, true
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="`+a.basic.Realm+`", charset="UTF-8"`)
		http.Error(w, "admin: authentication required", http.StatusUnauthorized)
		return "", false
	default:
		actor, err := a.authorize(r, action)
		if err != nil {
			http.Error(w, fmt.Sprintf("admin: %s refused: %v", action, err), http.StatusForbidden)
			return "", false
		}
		return actor, true
	}
}

// allows reports, without answering anything, whether the request may do
// action: the page uses it to offer only the forms the actor may submit.
func (a *authorizer) allows(r *http.Request, action Action) bool {
	if a.authorize == nil {
		return true // basic auth and InsecureNoAuth allow every action to whoever may view
	}
	_, err := a.authorize(r, action)
	return err == nil
}

// csrfToken returns the token the forms carry for actor: an HMAC of the
// actor under the handler's key, so that it is valid only for that actor
// and that key.
func csrfToken(key []byte, actor string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cacheme/admin csrf v1\x00"))
	m.Write([]byte(actor))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfValid reports whether token is actor's token under key.
func csrfValid(key []byte, actor, token string) bool {
	return token != "" && hmac.Equal([]byte(token), []byte(csrfToken(key, actor)))
}

// hostRule is one entry of Options.AllowedHosts.
type hostRule struct {
	host string // lower case, without brackets or a trailing dot
	port string // "" matches any port
}

func parseHostRules(hosts []string) ([]hostRule, error) {
	if len(hosts) == 0 {
		hosts = defaultAllowedHosts
	}
	rules := make([]hostRule, 0, len(hosts))
	for _, s := range hosts {
		h, p, ok := splitHost(s)
		if !ok || strings.ContainsAny(s, "*/@ ") {
			return nil, fmt.Errorf("admin: Options.AllowedHosts: bad host %q: want a name or address, optionally with a port", s)
		}
		rules = append(rules, hostRule{h, p})
	}
	return rules, nil
}

// splitHost splits a Host header (or an AllowedHosts entry) into its
// normalized host and its port ("" if none).
func splitHost(s string) (host, port string, ok bool) {
	s = strings.ToLower(s)
	host = s
	if h, p, err := net.SplitHostPort(s); err == nil {
		if p == "" {
			return "", "", false
		}
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return "", "", false
		}
		host, port = h, p
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if host == "" || checkText("host", host) != nil {
		return "", "", false
	}
	return host, port, true
}

// hostAllowed reports whether the request's Host is one of rules.
func hostAllowed(rules []hostRule, reqHost string) bool {
	h, p, ok := splitHost(reqHost)
	if !ok {
		return false
	}
	for _, r := range rules {
		if r.host == h && (r.port == "" || r.port == p) {
			return true
		}
	}
	return false
}

// crossSite says why a POST looks like it comes from another site, or ""
// if it does not: a Sec-Fetch-Site other than same-origin, or an Origin
// or (without an Origin) a Referer whose host is not the request's Host.
func crossSite(r *http.Request) string {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return "Sec-Fetch-Site is " + strconv.Quote(s)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Sprintf("Origin %q does not match Host %q", o, r.Host)
		}
		return ""
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		u, err := url.Parse(ref)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Sprintf("Referer %q does not match Host %q", ref, r.Host)
		}
	}
	return ""
}

// checkForm checks every name and value of a form with checkText.
func checkForm(f url.Values) error {
	for name, values := range f {
		if err := checkText("field name", name); err != nil {
			return err
		}
		for _, v := range values {
			if err := checkText("field "+strconv.QuoteToASCII(name), v); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkText refuses what has no business in a key, group, tag or any
// other field: invalid UTF-8 and control characters (NUL, C0, DEL, C1).
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s %s is not valid UTF-8", what, strconv.QuoteToASCII(s))
	}
	for i, c := range s {
		if unicode.IsControl(c) {
			return fmt.Errorf("%s %s has the control character %U at byte %d", what, strconv.QuoteToASCII(s), c, i)
		}
	}
	return nil
}
