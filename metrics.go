package bonnie

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the engine's Prometheus counters. Register them with
// prometheus.Registerer.MustRegister(m) or serve m.Registry().
type Metrics struct {
	received     *prometheus.CounterVec
	appended     prometheus.Counter
	duplicates   prometheus.Counter
	appendErrors prometheus.Counter
	deadLetters  *prometheus.CounterVec
	sinkLag      *prometheus.GaugeVec
	sinkErrors   *prometheus.CounterVec
	bodies       *prometheus.CounterVec
	ingestTime   prometheus.Histogram
	appendTime   prometheus.Histogram
	registry     *prometheus.Registry
}

// NewMetrics creates the counters in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bonnie_events_received_total", Help: "Notifications received, by source.",
		}, []string{"source"}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bonnie_events_appended_total", Help: "Events appended to the log.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bonnie_events_duplicate_total", Help: "Notifications already in the log (redeliveries).",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bonnie_append_errors_total", Help: "Failed log transactions.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bonnie_dead_letters_total", Help: "Input kept as dead letters, by source.",
		}, []string{"source"}),
		sinkLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bonnie_sink_lag_events", Help: "Records between the log head and a sink's cursor.",
		}, []string{"sink"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bonnie_sink_errors_total", Help: "Sink handler failures (each retried).",
		}, []string{"sink"}),
		bodies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bonnie_bodies_total", Help: "Message bodies fetched at ingest, by outcome (stored, failed, skipped while the body source fails).",
		}, []string{"outcome"}),
		// What a synchronous (dlist) Cyrus waits for, from the engine's
		// side: buckets from 0.25 ms, where a reply should be.
		ingestTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bonnie_ingest_duration_seconds",
			Help:    "From a notification handed to the engine to its answer (durable, duplicate or dead letter).",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 14),
		}),
		appendTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bonnie_append_duration_seconds",
			Help:    "One batch appended to the log, until durable.",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 14),
		}),
		registry: prometheus.NewRegistry(),
	}
	m.registry.MustRegister(m)
	return m
}

// Registry returns the registry the counters live in, for promhttp.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.received, m.appended, m.duplicates, m.appendErrors, m.deadLetters, m.sinkLag, m.sinkErrors, m.bodies, m.ingestTime, m.appendTime}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}
