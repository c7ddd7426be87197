package cacheme_test

import (
	"context"
	"fmt"
	"strconv"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/nodes"
)

// Key mode: a function memoized by key, which joins an invalidation group.
func Example() {
	m, err := miniredis.Run() // any Redis server works; this one is in-process
	if err != nil {
		panic(err)
	}
	defer m.Close()
	m.ClockTTL(true) // keys expire as the clock runs, as Redis's do
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()

	p := cacheme.New(cacheme.Settings{Redis: rdb})
	type book struct {
		ID       int
		AuthorID int
	}
	title, err := cacheme.Wrap(p, cacheme.Spec[book, string]{
		Key: func(b book) string { return "book:" + strconv.Itoa(b.ID) + ">title" },
		// Invalidating the group "author:<id>" invalidates this entry.
		Groups: func(b book, _ string) []string { return []string{"author:" + strconv.Itoa(b.AuthorID)} },
	}, func(_ context.Context, b book) (string, error) {
		fmt.Println("loading book", b.ID)
		return fmt.Sprintf("Book %d", b.ID), nil
	})
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	b := book{ID: 1, AuthorID: 7}
	for range 2 {
		t, _ := title(ctx, b)
		fmt.Println(t)
	}
	n, _ := p.InvalidateGroups(ctx, "author:7")
	fmt.Println("invalidated", n)
	t, _ := title(ctx, b)
	fmt.Println(t)
	n, _ = p.InvalidateKeys(ctx, "book:1")
	fmt.Println("invalidated", n)
	// Output:
	// loading book 1
	// Book 1
	// Book 1
	// invalidated 1
	// loading book 1
	// Book 1
	// invalidated 1
}

// UserBooks is a node: the books of one user.
type UserBooks struct {
	UserID int `node:"required"`
}

// Key is the cache key.
func (n UserBooks) Key() string { return "user:" + strconv.Itoa(n.UserID) + ">books" }

// InvalidNodes puts the result in the user's invalidation group.
func (n UserBooks) InvalidNodes() []nodes.InvalidNode {
	//lint:ignore S1016 the example names the group's field on purpose
	return []nodes.InvalidNode{UserGroup{UserID: n.UserID}}
}

// UserGroup is the invalidation group of everything cached about a user.
type UserGroup struct {
	UserID int `node:"required"`
}

// Key is the group name.
func (g UserGroup) Key() string { return "user:" + strconv.Itoa(g.UserID) }

// Node mode: a function memoized by node, and the node type's manager.
func ExampleWrapNode() {
	m, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer m.Close()
	m.ClockTTL(true)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	p := cacheme.New(cacheme.Settings{Redis: rdb})

	books, err := cacheme.WrapNode(p, cacheme.NodeSpec[int, UserBooks, []string]{
		Node: func(userID int) UserBooks { return UserBooks{UserID: userID} },
	}, func(_ context.Context, userID int) ([]string, error) {
		fmt.Println("loading books of user", userID)
		return []string{"Dune", "Emma"}, nil
	})
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	bs, _ := books(ctx, 12)
	fmt.Println(bs)
	bs, _ = books(ctx, 12)
	fmt.Println(bs)

	manager := cacheme.Nodes[UserBooks, []string](p)
	cached, err := manager.Get(ctx, UserBooks{UserID: 12})
	fmt.Println(cached, err)
	_, err = manager.Get(ctx, UserBooks{UserID: 13})
	fmt.Println(err)

	n, _ := p.InvalidateInvalidNodes(ctx, UserGroup{UserID: 12})
	fmt.Println("invalidated", n)
	_, err = manager.Get(ctx, UserBooks{UserID: 12})
	fmt.Println(err)
	bs, _ = books(ctx, 13)
	fmt.Println(bs)

	n, _ = manager.InvalidateAll(ctx)
	fmt.Println("invalidated", n, "of tag", manager.Tag())

	_, err = books(ctx, 0)
	fmt.Println(err)
	// Output:
	// loading books of user 12
	// [Dune Emma]
	// [Dune Emma]
	// [Dune Emma] <nil>
	// cacheme: not cached: node CM:user:13>books
	// invalidated 1
	// cacheme: not cached: node CM:user:12>books
	// loading books of user 13
	// [Dune Emma]
	// invalidated 1 of tag UserBooks
	// nodes: UserID is required for UserBooks
}
