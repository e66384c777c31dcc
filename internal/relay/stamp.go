package relay

import "time"

// stamp is an instant as monotonic nanoseconds since stampBase; zero is "unset". A session
// keeps seven instants for as long as it lives: 8 bytes each instead of a time.Time's 24.
type stamp int64

// stampBase lies a second in the past, so a stamp taken now is never zero.
var stampBase = time.Now().Add(-time.Second)

func stampOf(t time.Time) stamp { return stamp(t.Sub(stampBase)) }

func stampNow() stamp { return stampOf(time.Now()) }

// time is the instant as a time.Time (the zero Time when unset).
func (s stamp) time() time.Time {
	if s == 0 {
		return time.Time{}
	}
	return stampBase.Add(time.Duration(s))
}
