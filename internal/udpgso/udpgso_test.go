package udpgso

import "testing"

// TestRunEnd: a run holds datagrams of its first one's size, ends after
// a shorter one or before a longer one, and stays within MaxSegments and
// MaxBytes (counting the per-datagram overhead).
func TestRunEnd(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sizes    []int
		overhead int
		want     int
	}{
		{"alone", []int{100}, 0, 1},
		{"short tail", []int{100, 100, 40, 100}, 0, 3},
		{"longer ends", []int{100, 200}, 0, 1},
		{"segments", make100(70), 0, MaxSegments},
		{"bytes with overhead", []int{30000, 30000, 30000}, 4, 2},
	} {
		got := RunEnd(len(tc.sizes), 0, func(k int) int { return tc.sizes[k] }, tc.overhead)
		if got != tc.want {
			t.Errorf("%s: run ends at %d, want %d", tc.name, got, tc.want)
		}
	}
}

func make100(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 100
	}
	return s
}

// TestBufsReused: buffers lent in one batch are distinct, hold MaxBytes,
// and are lent again after Reset instead of new ones.
func TestBufsReused(t *testing.T) {
	var b Bufs
	x, y := b.Next(), b.Next()
	if cap(x) != MaxBytes || cap(y) != MaxBytes {
		t.Fatalf("capacities %d and %d, want %d", cap(x), cap(y), MaxBytes)
	}
	x, y = append(x, 1), append(y, 2)
	if x[0] != 1 || y[0] != 2 {
		t.Fatal("two buffers of one batch share memory")
	}
	b.Reset()
	if z := b.Next(); &z[:1][0] != &x[0] {
		t.Fatal("Reset did not lend the first buffer again")
	}
	if allocs := testing.AllocsPerRun(100, func() { b.Reset(); b.Next(); b.Next() }); allocs != 0 {
		t.Fatalf("a batch of two runs allocated %v times, want 0", allocs)
	}
}
