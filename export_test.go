package cacheme

import "time"

// SetFleetClock sets the clock that picks the minutes of the counters'
// hashes (fleetstats.go), for tests.
func SetFleetClock(p *Plugin, now func() time.Time) {
	p.pub.mu.Lock()
	defer p.pub.mu.Unlock()
	p.pub.now = now
}
