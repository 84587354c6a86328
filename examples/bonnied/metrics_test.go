package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
)

// TestMetricsServerProfiler: /metrics is always served, the profiler only
// with --pprof, and --pprof without a --metrics address is refused.
func TestMetricsServerProfiler(t *testing.T) {
	lg := slog.New(slog.DiscardHandler)
	for _, profile := range []bool{false, true} {
		srv, addr, err := serveMetricsAddr("127.0.0.1:0", bonnie.NewMetrics(), profile, lg)
		if err != nil {
			t.Fatal(err)
		}
		get := func(path string) (int, string) {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "bonnie_") {
			t.Errorf("pprof %v: /metrics: %d %.80q", profile, code, body)
		}
		code, body := get("/debug/pprof/")
		if profile && (code != 200 || !strings.Contains(body, "goroutine")) {
			t.Errorf("--pprof: /debug/pprof/: %d %.80q", code, body)
		}
		if !profile && code != http.StatusNotFound {
			t.Errorf("without --pprof: /debug/pprof/ answered %d", code)
		}
		srv.Shutdown(context.Background())
	}
	if _, err := parse([]string{"--cyrus-socket", "/x", "--metrics", "", "--pprof"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--pprof") {
		t.Errorf("--pprof without --metrics: %v", err)
	}
}
