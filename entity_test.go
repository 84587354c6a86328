package bonnie

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 20, 23, 32, 0, time.UTC)

func TestSetterRecordsOnlyDifferences(t *testing.T) {
	tests := []struct {
		name string
		do   func(rec *Changes)
		want []Change
	}{
		{
			name: "path change records one change with from and to",
			do: func(rec *Changes) {
				f := NewFolder(rec, "kwv2", map[string]string{"path": "user.alice.Work", "state": StatePresent})
				f.SetPath("user.alice.Projects")
			},
			want: []Change{{Entity: KindFolder, ID: "kwv2", Field: "path", From: "user.alice.Work", To: "user.alice.Projects"}},
		},
		{
			name: "setting an equal value records nothing",
			do: func(rec *Changes) {
				f := NewFolder(rec, "kwv2", map[string]string{"path": "user.alice.Work"})
				f.SetPath("user.alice.Work")
				f.SetOwner("")
			},
		},
		{
			name: "flags change records the difference, sorted",
			do: func(rec *Changes) {
				m := NewMessage(rec, "m", map[string]string{"flag:\\Seen": "set", "flag:$Work": "set"})
				m.SetFlags([]string{`\Seen`, `\Flagged`, `\Answered`})
			},
			want: []Change{
				{Entity: KindMessage, ID: "m", Field: "flag:$Work", From: "set", To: ""},
				{Entity: KindMessage, ID: "m", Field: `flag:\Answered`, From: "", To: "set"},
				{Entity: KindMessage, ID: "m", Field: `flag:\Flagged`, From: "", To: "set"},
			},
		},
		{
			name: "creation and deletion are changes",
			do: func(rec *Changes) {
				f := NewFolder(rec, "x", nil)
				f.Create()
				f.Create()
				f.Delete()
			},
			want: []Change{
				{Entity: KindFolder, ID: "x", Field: "state", From: "", To: StatePresent},
				{Entity: KindFolder, ID: "x", Field: "state", From: StatePresent, To: StateDeleted},
			},
		},
		{
			name: "ACL replace records grants and revokes per subject",
			do: func(rec *Changes) {
				f := NewFolder(rec, "x", map[string]string{"acl:alice": "lrswipkxtecdan", "acl:bob": "lrs"})
				f.SetACL(ACL{{"alice", "lrswipkxtecdan"}, {"anyone", "p"}})
			},
			want: []Change{
				{Entity: KindFolder, ID: "x", Field: "acl:bob", From: "lrs", To: ""},
				{Entity: KindFolder, ID: "x", Field: "acl:anyone", From: "", To: "p"},
			},
		},
		{
			name: "session end records end and duration",
			do: func(rec *Changes) {
				s := NewSession(rec, "s1", map[string]string{"start": formatTime(t0)})
				s.SetEnd(t0.Add(90 * time.Second))
			},
			want: []Change{
				{Entity: KindSession, ID: "s1", Field: "end", From: "", To: formatTime(t0.Add(90 * time.Second))},
				{Entity: KindSession, ID: "s1", Field: "duration", From: "", To: "1m30s"},
			},
		},
		{
			name: "object revisions count up",
			do: func(rec *Changes) {
				o := NewObject(rec, "uid-1", nil)
				o.AddRevision("f/1/1")
				o.AddRevision("f/1/2")
			},
			want: []Change{
				{Entity: KindObject, ID: "uid-1", Field: "revision", From: "", To: "1"},
				{Entity: KindObject, ID: "uid-1", Field: "message", From: "", To: "f/1/1"},
				{Entity: KindObject, ID: "uid-1", Field: "revision", From: "1", To: "2"},
				{Entity: KindObject, ID: "uid-1", Field: "message", From: "f/1/1", To: "f/1/2"},
			},
		},
		{
			name: "group membership records joins and leaves",
			do: func(rec *Changes) {
				g := NewGroup(rec, "finance", map[string]string{"member:alice": "set"})
				g.SetMembers([]string{"bob"})
			},
			want: []Change{
				{Entity: KindGroup, ID: "finance", Field: "member:alice", From: "set", To: ""},
				{Entity: KindGroup, ID: "finance", Field: "member:bob", From: "", To: "set"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := NewChanges("alice", t0)
			tt.do(rec)
			got := rec.List()
			for i := range tt.want {
				tt.want[i].Actor, tt.want[i].Time = "alice", t0
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("changes:\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestEntityReadsBackWhatItSet(t *testing.T) {
	rec := NewChanges("alice", t0)
	m := NewMessage(rec, MessageKey("kwv2", 1795897411, 7), nil)
	m.Create()
	m.SetFolder("kwv2")
	m.SetUID(7)
	m.SetSize(244)
	m.SetInternalDate(t0)
	m.AddFlags(`\Flagged`, "$Work")
	m.RemoveFlags("$Work")
	if m.ID() != "kwv2/1795897411/7" || m.UID() != 7 || m.Size() != 244 || !m.InternalDate().Equal(t0) {
		t.Fatalf("message read back wrong: %+v", m.Fields())
	}
	if got := m.Flags(); !slices.Equal(got, []string{`\Flagged`}) {
		t.Fatalf("flags = %v", got)
	}
	// Reloading from the recorded state gives the same entity.
	again := NewMessage(nil, m.ID(), m.Fields())
	if !slices.Equal(again.Flags(), m.Flags()) || again.Folder() != "kwv2" {
		t.Fatalf("reload differs: %v", again.Fields())
	}
	// Folding the changes gives the same state.
	fold := map[string]string{}
	for _, c := range rec.List() {
		if c.To == "" {
			delete(fold, c.Field)
		} else {
			fold[c.Field] = c.To
		}
	}
	if len(fold) != len(m.Fields()) {
		t.Fatalf("fold %v != fields %v", fold, m.Fields())
	}
	for k, v := range m.Fields() {
		if fold[k] != v {
			t.Fatalf("fold[%s] = %q, want %q", k, fold[k], v)
		}
	}
}
