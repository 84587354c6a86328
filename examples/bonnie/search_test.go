package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie/sink/discovery"
)

func TestSearch(t *testing.T) {
	dir := newLog(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string // Message-IDs, in order
	}{
		{"subject", []string{"--custodian", "alice", "--subject", "FIRST message", "--type", "MessageAppend"}, []string{"<harness-1@example.org>"}},
		{"folder by its later name, time range", []string{"--folder", "user.alice.Projects", "--type", "MessageNew,vnd.cmu.MessageCopy",
			"--from", "2026-11-28T20:23:30Z", "--to", "2026-11-28T21:00:00Z"}, []string{"<harness-1@example.org>", "<harness-6@example.org>"}},
		{"expired", []string{"--type", "MessageExpire", "--message-id", "harness-7@example.org"}, []string{"<harness-7@example.org>"}},
		{"nothing", []string{"--sender", "nobody@nowhere"}, nil},
	} {
		code, out, errs := bonnieCmd(t, nil, append([]string{"--data", dir, "search", "--json"}, tc.args...)...)
		if code != 0 {
			t.Fatalf("%s: %d %s", tc.name, code, errs)
		}
		var hits []discovery.Hit
		if err := json.Unmarshal([]byte(out), &hits); err != nil {
			t.Fatalf("%s: %v\n%s", tc.name, err, out)
		}
		var got []string
		for _, h := range hits {
			got = append(got, h.MessageID)
			if h.Position == 0 {
				t.Errorf("%s: hit without a log position", tc.name)
			}
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	code, out, errs := bonnieCmd(t, nil, "--data", dir, "search", "--sender", "bob@example.org", "--type", "MessageAppend")
	if code != 0 || !strings.Contains(out, "first message") || !strings.Contains(out, "hits") {
		t.Errorf("table: %d\n%s%s", code, out, errs)
	}
	// The searches are recorded, and searchable.
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "search", "--type", "vnd.bonnie.Query", "--json")
	var hits []discovery.Hit
	if code != 0 || json.Unmarshal([]byte(out), &hits) != nil || len(hits) != 6 || !strings.Contains(string(hits[0].Detail), `"search"`) {
		t.Errorf("recorded queries: %d\n%s", code, out)
	}
	for _, args := range [][]string{{"--type", "NoSuchEvent"}, {"--from", "today"}, {"--folder", "user.nobody"}} {
		if code, _, errs := bonnieCmd(t, nil, append([]string{"--data", dir, "search"}, args...)...); code != 1 || errs == "" {
			t.Errorf("%v: %d %q", args, code, errs)
		}
	}
}
