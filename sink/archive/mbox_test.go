package archive

import (
	"bufio"
	"bytes"
	"regexp"
	"testing"
)

func TestMboxrdQuoting(t *testing.T) {
	unquote := regexp.MustCompile(`(?m)^>(>*From )`)
	for _, in := range []string{
		"", "From ", "From", "From x\r\nFrom y\n", ">From a\n>>From b\n>>>From c\n", "x\nFrom \n", "Fromage\nFrom: header\n",
		"a From b\n", ">\n>>\n>>>", "\n\nFrom the start\r\n\r\nFrom", ">>>>>>>>>From deep", "no newline at end From x",
	} {
		for _, chunk := range []int{1, 2, 3, 7, 1 << 20} {
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			q := &mboxrdWriter{w: bw, atStart: true}
			for i := 0; i < len(in); i += chunk {
				if _, err := q.Write([]byte(in[i:min(i+chunk, len(in))])); err != nil {
					t.Fatal(err)
				}
			}
			q.Close()
			bw.Flush()
			if regexp.MustCompile(`(?m)^From `).Match(out.Bytes()) {
				t.Errorf("%q (chunks of %d): unquoted From line in %q", in, chunk, out.String())
			}
			if back := unquote.ReplaceAllString(out.String(), "$1"); back != in {
				t.Errorf("%q (chunks of %d): quoted %q, unquoted %q", in, chunk, out.String(), back)
			}
		}
	}
}
