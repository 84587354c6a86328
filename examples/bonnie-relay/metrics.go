package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// registry exposes the relay's counters and its spool's size. The values
// are read from the relay when scraped: nothing is counted twice.
func (r *relay) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "bonnie_relay", Name: name, Help: help}, f))
	}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "bonnie_relay", Name: name, Help: help}, f))
	}
	counter("spooled_total", "Notifications written to the spool (durable before Cyrus was answered).", func() float64 { return float64(r.spooled.Load()) })
	counter("published_total", "Notifications RabbitMQ confirmed (then deleted from the spool).", func() float64 { return float64(r.sent.Load()) })
	counter("spool_full_total", "Notifications refused for a while because the spool was full (back-pressure on Cyrus).", func() float64 { return float64(r.full.Load()) })
	counter("spool_errors_total", "Spool writes that failed (the notification was refused, Cyrus retries or logs it).", func() float64 { return float64(r.failed.Load()) })
	counter("lost_total", "Notifications not relayed: given up after the retries or from a refused sender (each logged with its bytes).", func() float64 { return float64(r.lost.Load()) })
	counter("publish_errors_total", "Publish attempts that failed (the broker away); the spool keeps the notifications.", func() float64 { return float64(r.pubErrors.Load()) })
	counter("bodies_fetched_total", "Message bodies fetched (--cyrus-spool, --imap) into the relay's body store.", func() float64 { return float64(r.bodiesFetched.Load()) })
	counter("bodies_failed_total", "Message bodies that could not be fetched (the failure is sent with the notification).", func() float64 { return float64(r.bodiesFailed.Load()) })
	counter("bodies_published_total", "Message bodies RabbitMQ confirmed on the bodies exchange.", func() float64 { return float64(r.bodiesSent.Load()) })
	counter("body_bytes_published_total", "Bytes of those bodies.", func() float64 { return float64(r.bodyBytes.Load()) })
	gauge("spool_notifications", "Notifications in the spool, not yet confirmed by RabbitMQ.", func() float64 { n, _, _ := r.sp.size(); return float64(n) })
	gauge("spool_bytes", "Bytes of the notifications in the spool.", func() float64 { _, b, _ := r.sp.size(); return float64(b) })
	gauge("spool_body_bytes", "Bytes of the bodies fetched for the notifications in the spool (SPOOL/blobs), counted against --spool-max-bytes.", func() float64 { _, _, b := r.sp.size(); return float64(b) })
	gauge("spool_max_notifications", "--spool-max-count.", func() float64 { return float64(r.cfg.maxCount) })
	gauge("spool_max_bytes", "--spool-max-bytes.", func() float64 { return float64(r.cfg.maxBytes) })
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics on addr until Close.
func serveMetrics(addr string, reg *prometheus.Registry, lg *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lg.Error("metrics server", "err", err)
		}
	}()
	lg.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return srv, nil
}
