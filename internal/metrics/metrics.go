// Package metrics is a small Prometheus text-format (version 0.0.4)
// exposition: counters, gauges, and families computed at scrape time.
//
// Why not github.com/prometheus/client_golang: both daemons need a dozen
// counters and gauges and nothing else (no histograms, no push, no process
// collectors), and client_golang brings protobuf, procfs and
// prometheus/common into two binaries that otherwise stay small. The text
// format is simple and stable, and the tests scrape and parse it.
package metrics

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metric families in registration order.
type Registry struct {
	mu       sync.Mutex
	families []family
	names    map[string]bool
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{names: map[string]bool{}} }

type family interface {
	write(b *bytes.Buffer)
}

func (r *Registry) add(name string, f family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names[name] {
		panic("metrics: duplicate metric " + name) // a programming error, found at startup
	}
	r.names[name] = true
	r.families = append(r.families, f)
}

// Sample is one value of a family with its label values, in the order of the
// family's label names.
type Sample struct {
	Labels []string
	Value  float64
}

// Counter registers a counter family with the given label names.
func (r *Registry) Counter(name, help string, labels ...string) *Vec {
	v := &Vec{head: header(name, help, "counter"), name: name, labels: labels, vals: map[string]*value{}}
	r.add(name, v)
	return v
}

// Gauge registers a gauge family with the given label names.
func (r *Registry) Gauge(name, help string, labels ...string) *Vec {
	v := &Vec{head: header(name, help, "gauge"), name: name, labels: labels, vals: map[string]*value{}}
	r.add(name, v)
	return v
}

// GaugeFunc registers a gauge family whose samples collect computes at each
// scrape: for values that live elsewhere (per-peer state, map sizes).
func (r *Registry) GaugeFunc(name, help string, labels []string, collect func() []Sample) {
	r.add(name, &funcFamily{head: header(name, help, "gauge"), name: name, labels: labels, collect: collect})
}

// CounterFunc is GaugeFunc for values that only grow (byte counts kept by
// another component).
func (r *Registry) CounterFunc(name, help string, labels []string, collect func() []Sample) {
	r.add(name, &funcFamily{head: header(name, help, "counter"), name: name, labels: labels, collect: collect})
}

// Vec is a counter or gauge family. With no label names it has one sample.
type Vec struct {
	head   string
	name   string
	labels []string
	mu     sync.Mutex
	vals   map[string]*value
}

type value struct {
	labels []string
	bits   atomic.Uint64 // float64 bits
}

func (v *value) add(d float64) {
	for {
		old := v.bits.Load()
		if v.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// With returns the sample for label values lv (one per label name). Keep
// the label values bounded: each distinct tuple lives until the process ends.
func (v *Vec) With(lv ...string) *Value {
	if len(lv) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s wants %d label values, got %d", v.name, len(v.labels), len(lv)))
	}
	key := strings.Join(lv, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	val := v.vals[key]
	if val == nil {
		val = &value{labels: slices.Clone(lv)}
		v.vals[key] = val
	}
	return (*Value)(val)
}

// Inc adds one to the family's unlabelled sample.
func (v *Vec) Inc() { v.With().Inc() }

// Add adds d to the family's unlabelled sample.
func (v *Vec) Add(d float64) { v.With().Add(d) }

// Set sets the family's unlabelled sample.
func (v *Vec) Set(x float64) { v.With().Set(x) }

// Value is one sample of a Vec.
type Value value

// Inc adds one.
func (x *Value) Inc() { (*value)(x).add(1) }

// Add adds d (counters: d >= 0).
func (x *Value) Add(d float64) { (*value)(x).add(d) }

// Set replaces the value (gauges).
func (x *Value) Set(f float64) { x.bits.Store(math.Float64bits(f)) }

// Get reads the value.
func (x *Value) Get() float64 { return math.Float64frombits(x.bits.Load()) }

func (v *Vec) write(b *bytes.Buffer) {
	v.mu.Lock()
	vals := make([]*value, 0, len(v.vals))
	for _, x := range v.vals {
		vals = append(vals, x)
	}
	v.mu.Unlock()
	slices.SortFunc(vals, func(a, b *value) int { return slices.Compare(a.labels, b.labels) })
	b.WriteString(v.head)
	if len(v.labels) == 0 && len(vals) == 0 {
		writeSample(b, v.name, nil, nil, 0) // an unlabelled family always has its one sample
	}
	for _, x := range vals {
		writeSample(b, v.name, v.labels, x.labels, math.Float64frombits(x.bits.Load()))
	}
}

type funcFamily struct {
	head    string
	name    string
	labels  []string
	collect func() []Sample
}

func (f *funcFamily) write(b *bytes.Buffer) {
	samples := f.collect()
	slices.SortFunc(samples, func(a, b Sample) int { return slices.Compare(a.Labels, b.Labels) })
	b.WriteString(f.head)
	for _, s := range samples {
		if len(s.Labels) != len(f.labels) {
			continue // a collector bug; skip the sample rather than emit a malformed line
		}
		writeSample(b, f.name, f.labels, s.Labels, s.Value)
	}
}

func header(name, help, typ string) string {
	help = strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help)
	return "# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n"
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func writeSample(b *bytes.Buffer, name string, names, vals []string, v float64) {
	b.WriteString(name)
	if len(names) > 0 {
		b.WriteByte('{')
		for i, n := range names {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(n)
			b.WriteString(`="`)
			b.WriteString(labelEscaper.Replace(vals[i]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	switch {
	case math.IsInf(v, 1):
		b.WriteString("+Inf")
	case math.IsInf(v, -1):
		b.WriteString("-Inf")
	case math.IsNaN(v):
		b.WriteString("NaN")
	default:
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	}
	b.WriteByte('\n')
}

// WriteTo writes every family in the text format.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	fams := slices.Clone(r.families)
	r.mu.Unlock()
	var b bytes.Buffer
	for _, f := range fams {
		f.write(&b)
	}
	return b.WriteTo(w)
}

// ContentType is the media type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Handler serves the registry at any path it is mounted on.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		r.WriteTo(w)
	})
}
