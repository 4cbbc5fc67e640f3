package metrics

import "runtime"

// RegisterGoRuntime adds the Go runtime gauges that explain a process's
// memory: goroutines, heap and stack in use, and memory taken from the OS.
// The names follow client_golang's, so existing dashboards read them.
func RegisterGoRuntime(r *Registry) {
	r.GaugeFunc("go_goroutines", "Goroutines that currently exist.", nil, func() []Sample {
		return []Sample{{Value: float64(runtime.NumGoroutine())}}
	})
	mem := func(f func(*runtime.MemStats) uint64) func() []Sample {
		return func() []Sample {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return []Sample{{Value: float64(f(&m))}}
		}
	}
	r.GaugeFunc("go_memstats_heap_inuse_bytes", "Heap bytes in in-use spans.", nil,
		mem(func(m *runtime.MemStats) uint64 { return m.HeapInuse }))
	r.GaugeFunc("go_memstats_stack_inuse_bytes", "Bytes of goroutine stacks.", nil,
		mem(func(m *runtime.MemStats) uint64 { return m.StackInuse }))
	r.GaugeFunc("go_memstats_sys_bytes", "Bytes obtained from the OS.", nil,
		mem(func(m *runtime.MemStats) uint64 { return m.Sys }))
}
