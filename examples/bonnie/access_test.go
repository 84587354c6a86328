package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie/sink/discovery"
)

// TestAccessFromCapture asks who could read user.alice.Work while bob's
// grant was in force (captures 046-048 of the real Cyrus session), and
// what bob could read then.
func TestAccessFromCapture(t *testing.T) {
	dir := newLog(t)
	// SETACL bob lrs at 20:23:38.333, DELETEACL at 20:23:38.6xx.
	for _, tc := range []struct {
		at   string
		want []string
	}{
		{"2026-11-28T20:23:38.000Z", []string{"alice"}},
		{"2026-11-28T20:23:38.400Z", []string{"alice", "bob"}},
		{"2026-11-28T21:23:38.400+01:00", []string{"alice", "bob"}},
		{"2026-11-28T20:23:39.000Z", []string{"alice"}},
	} {
		code, out, errs := bonnieCmd(t, nil, "--data", dir, "access", "--folder", "user.alice.Work", "--at", tc.at, "--json")
		if code != 0 {
			t.Fatalf("access --folder at %s: %d %s", tc.at, code, errs)
		}
		var fas []discovery.FolderAccess
		if err := json.Unmarshal([]byte(out), &fas); err != nil || len(fas) != 1 {
			t.Fatalf("%v\n%s", err, out)
		}
		var got []string
		for _, r := range fas[0].Readers {
			got = append(got, r.ID)
		}
		if !slices.Equal(got, tc.want) || fas[0].Position == 0 {
			t.Errorf("at %s: readers %v, want %v", tc.at, got, tc.want)
		}
	}
	code, out, errs := bonnieCmd(t, nil, "--data", dir, "access", "--user", "bob", "--at", "2026-11-28T20:23:38.400Z")
	if code != 0 || !strings.Contains(out, "user.alice.Work") || !strings.Contains(out, "lrs") || !strings.Contains(out, "user.bob") {
		t.Errorf("access --user bob: %d\n%s%s", code, out, errs)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "access", "--user", "bob", "--at", "2026-11-28T20:23:39Z")
	if code != 0 || strings.Contains(out, "user.alice.Work") {
		t.Errorf("after the revoke: %d\n%s", code, out)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "access", "--folder", "user.alice.Work", "--at", "2026-11-28T20:23:38.400Z")
	if code != 0 || !strings.Contains(out, "READER") || !strings.Contains(out, "bob") {
		t.Errorf("table: %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"access"},
		{"access", "--folder", "x", "--user", "y"},
		{"access", "--folder", "user.alice.Work", "--at", "yesterday"},
		{"access", "--folder", "user.nobody", "--at", "2026-11-28T20:23:39Z"},
	} {
		if code, _, errs := bonnieCmd(t, nil, append([]string{"--data", dir}, args...)...); code != 1 || errs == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
}

// TestAccessWithDirectoryGroups uses the group membership the real
// directory gave at event time: carol could read alice's folder through
// group finance once it was granted, not before.
func TestAccessWithDirectoryGroups(t *testing.T) {
	dir, s, _ := identityLog(t)
	carol := s.UUID(t, "carol")
	granted := h0.Add(time.Hour + 3*time.Second)
	code, out, errs := bonnieCmd(t, nil, "--data", dir, "access", "--folder", "user.alice", "--at", granted.Add(time.Second).Format(time.RFC3339), "--json")
	if code != 0 {
		t.Fatalf("%d %s", code, errs)
	}
	var fas []discovery.FolderAccess
	if err := json.Unmarshal([]byte(out), &fas); err != nil || len(fas) != 1 {
		t.Fatalf("%v\n%s", err, out)
	}
	i := slices.IndexFunc(fas[0].Readers, func(r discovery.Reader) bool { return r.ID == carol })
	if i < 0 || !slices.Equal(fas[0].Readers[i].Via, []string{"group:finance"}) || fas[0].Readers[i].Login != "carol" {
		t.Fatalf("carol is not a reader through finance: %+v", fas[0].Readers)
	}
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{{granted.Add(-time.Second), false}, {granted.Add(time.Second), true}} {
		code, out, errs := bonnieCmd(t, nil, "--data", dir, "access", "--user", "carol", "--at", tc.at.Format(time.RFC3339), "--json")
		var pa discovery.PersonAccess
		if code != 0 || json.Unmarshal([]byte(out), &pa) != nil {
			t.Fatalf("%d %s%s", code, out, errs)
		}
		got := slices.ContainsFunc(pa.Folders, func(f discovery.FolderRight) bool { return f.Path == "user.alice" })
		if got != tc.want {
			t.Errorf("carol at %s could read user.alice: %v, want %v (%+v)", tc.at, got, tc.want, pa)
		}
	}
}
