package bonnie_test

import (
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/bonnie-archive/bonnie"
)

// TestMetricsCountIngestAndLatency: what an operator graphs moves with
// the work done: events in and appended, and the latency histograms of
// the ingest (what a dlist Cyrus waits for) and of the appends.
func TestMetricsCountIngestAndLatency(t *testing.T) {
	lg := openStore(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	caps := captures(t)
	for _, raw := range caps {
		if _, _, err := eng.Ingest(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fams, err := eng.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	n := uint64(len(caps))
	if f := got["bonnie_events_appended_total"]; f == nil || uint64(f.Metric[0].GetCounter().GetValue()) != n {
		t.Errorf("appended: %v, want %d", f, n)
	}
	if f := got["bonnie_ingest_duration_seconds"]; f == nil || f.Metric[0].GetHistogram().GetSampleCount() != n {
		t.Errorf("ingest histogram: %v, want %d samples", f, n)
	}
	if f := got["bonnie_append_duration_seconds"]; f == nil {
		t.Error("no append histogram")
	} else if h := f.Metric[0].GetHistogram(); h.GetSampleCount() == 0 || h.GetSampleCount() > n || h.GetSampleSum() <= 0 {
		t.Errorf("append histogram: %d batches, %gs, for %d events", h.GetSampleCount(), h.GetSampleSum(), n)
	}
}
