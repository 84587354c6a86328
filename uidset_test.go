package bonnie

import (
	"errors"
	"slices"
	"testing"
)

func TestParseUIDSet(t *testing.T) {
	tests := []struct {
		in   string
		want []uint32
	}{
		{"", nil},
		{"1", []uint32{1}},
		{"1:3", []uint32{1, 2, 3}},
		{"1,4:6", []uint32{1, 4, 5, 6}},
		{"3:1,7", []uint32{1, 2, 3, 7}},
		{"4294967295", []uint32{4294967295}},
		{"4294967294:4294967295", []uint32{4294967294, 4294967295}},
	}
	for _, tt := range tests {
		got, err := ParseUIDSet(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseUIDSet(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"0", "1:0", "*", "1:*", "a", "1,", ",1", "1::2", "1:2:3", " 1", "-1", "+1", "4294967296", "1;2"} {
		if _, err := ParseUIDSet(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseUIDSet(%q): %v, want ErrMalformed", in, err)
		}
	}
	for _, in := range []string{"1:4294967295", "1:1048576,1048577", "1:600000,1:600000"} {
		if _, err := ParseUIDSet(in); !errors.Is(err, ErrTooLarge) {
			t.Errorf("ParseUIDSet(%q): %v, want ErrTooLarge", in, err)
		}
	}
	if got, err := ParseUIDSet("1:1048576"); err != nil || len(got) != MaxUIDs {
		t.Errorf("exactly MaxUIDs: %d, %v", len(got), err)
	}
}
