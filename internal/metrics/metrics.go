// Package metrics holds zerotouch's Prometheus collectors, registered on a
// registry of its own (not the global default) and served at /metrics.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of collectors. A nil *Metrics records nothing, so
// packages can be used without metrics in tests.
type Metrics struct {
	Registry *prometheus.Registry

	provisionAttempts *prometheus.CounterVec
	provisionLatency  *prometheus.HistogramVec
}

// New creates and registers the collectors, plus the Go runtime and process ones.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		provisionAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zerotouch_provision_attempts_total",
			Help: "Provisioning requests by dialect and result (success or the refusal reason).",
		}, []string{"dialect", "result"}),
		provisionLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "zerotouch_provision_duration_seconds",
			Help:    "Time from a provisioning request's arrival to its durable answer, by dialect.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"dialect"}),
	}
	m.Registry.MustRegister(m.provisionAttempts, m.provisionLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveProvision records one provisioning attempt.
func (m *Metrics) ObserveProvision(dialect, result string, took time.Duration) {
	if m == nil {
		return
	}
	m.provisionAttempts.WithLabelValues(dialect, result).Inc()
	m.provisionLatency.WithLabelValues(dialect).Observe(took.Seconds())
}

// GaugeFunc registers a gauge whose value is read from fn at scrape time
// (e.g. connected devices, from the hub).
func (m *Metrics) GaugeFunc(name, help string, fn func() float64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

// CounterFunc registers a counter with one label whose values, one per label
// value, are read from fn at scrape time (counts kept by another package).
// With an empty label the counter has no label and fn is called with "".
func (m *Metrics) CounterFunc(name, help, label string, values []string, fn func(value string) float64) {
	if m == nil {
		return
	}
	if label == "" {
		m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return fn("") }))
		return
	}
	m.Registry.MustRegister(&labelledFunc{desc: prometheus.NewDesc(name, help, []string{label}, nil), kind: prometheus.CounterValue, values: values, fn: fn})
}

// LabelledGaugeFunc registers a gauge with one label, like CounterFunc.
func (m *Metrics) LabelledGaugeFunc(name, help, label string, values []string, fn func(value string) float64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&labelledFunc{desc: prometheus.NewDesc(name, help, []string{label}, nil), kind: prometheus.GaugeValue, values: values, fn: fn})
}

type labelledFunc struct {
	desc   *prometheus.Desc
	kind   prometheus.ValueType
	values []string
	fn     func(string) float64
}

func (c *labelledFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *labelledFunc) Collect(ch chan<- prometheus.Metric) {
	for _, v := range c.values {
		ch <- prometheus.MustNewConstMetric(c.desc, c.kind, c.fn(v), v)
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
