// Package exportcheck checks a Bonnie export the way its recipient would:
// with the Go standard library only, from the files alone, following the
// manifest's own words (howToCheck). It imports nothing of Bonnie on
// purpose; tests use it to prove an export can be checked without Bonnie.
package exportcheck

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Message is what the recipient reads from the manifest for one message.
type Message struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	MessageID   string `json:"messageId"`
	File        string `json:"file"`
	MboxOffset  *int64 `json:"mboxOffset"`
	MboxLength  *int64 `json:"mboxLength"`
	Occurrences []struct {
		Position uint64 `json:"position"`
		Path     string `json:"path"`
		Folder   string `json:"folder"`
		Time     string `json:"time"`
	} `json:"occurrences"`
}

// Manifest is the part of the manifest the recipient checks.
type Manifest struct {
	Format    string          `json:"format"`
	Container string          `json:"container"`
	Query     json.RawMessage `json:"query"`
	RunBy     struct {
		User string `json:"user"`
	} `json:"runBy"`
	CreatedAt string    `json:"createdAt"`
	Messages  []Message `json:"messages"`
	Count     int       `json:"count"`
	Bytes     int64     `json:"bytes"`
	Files     []struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	} `json:"files"`
}

// Result is a checked export: the manifest, its SHA-256, and each
// message's original bytes recovered from the container, by SHA-256.
type Result struct {
	Manifest       Manifest
	ManifestSHA256 string
	Bodies         map[string][]byte
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkSeal checks that the .sha256 file holds the SHA-256 of the manifest
// ("HEX  NAME" as sha256sum writes it) and decodes the manifest.
func checkSeal(manifest, seal []byte, r *Result) error {
	fields := strings.Fields(string(seal))
	if len(fields) != 2 {
		return fmt.Errorf("seal %q is not \"HEX  NAME\"", seal)
	}
	r.ManifestSHA256 = sum(manifest)
	if fields[0] != r.ManifestSHA256 {
		return fmt.Errorf("manifest hashes to %s, the seal says %s", r.ManifestSHA256, fields[0])
	}
	if err := json.Unmarshal(manifest, &r.Manifest); err != nil {
		return fmt.Errorf("manifest: %v", err)
	}
	if r.Manifest.Count != len(r.Manifest.Messages) {
		return fmt.Errorf("manifest counts %d messages, lists %d", r.Manifest.Count, len(r.Manifest.Messages))
	}
	return nil
}

func checkBody(m Message, b []byte, r *Result) error {
	if int64(len(b)) != m.Size {
		return fmt.Errorf("%s: %d bytes, manifest says %d", m.SHA256, len(b), m.Size)
	}
	if got := sum(b); got != m.SHA256 {
		return fmt.Errorf("%s: bytes hash to %s", m.SHA256, got)
	}
	r.Bodies[m.SHA256] = b
	return nil
}

// Zip checks an eml-zip export.
func Zip(path string) (*Result, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(rc) // archive/zip checks each entry's CRC-32
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", f.Name, err)
		}
		files[f.Name] = b
	}
	r := &Result{Bodies: map[string][]byte{}}
	if err := checkSeal(files["manifest.json"], files["manifest.json.sha256"], r); err != nil {
		return nil, err
	}
	listed := map[string]bool{"manifest.json": true, "manifest.json.sha256": true}
	for _, m := range r.Manifest.Messages {
		if m.File != m.SHA256+".eml" {
			return nil, fmt.Errorf("%s: file %q is not named by its hash", m.SHA256, m.File)
		}
		b, ok := files[m.File]
		if !ok {
			return nil, fmt.Errorf("%s: no entry %s", m.SHA256, m.File)
		}
		if err := checkBody(m, b, r); err != nil {
			return nil, err
		}
		listed[m.File] = true
	}
	for name := range files {
		if !listed[name] {
			return nil, fmt.Errorf("entry %s is not in the manifest", name)
		}
	}
	return r, nil
}

var quotedFrom = regexp.MustCompile(`(?m)^>(>*From )`)

// Mbox checks an mbox export: PATH, PATH.manifest.json and
// PATH.manifest.json.sha256.
func Mbox(path string) (*Result, error) {
	mbox, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	manifest, err := os.ReadFile(path + ".manifest.json")
	if err != nil {
		return nil, err
	}
	seal, err := os.ReadFile(path + ".manifest.json.sha256")
	if err != nil {
		return nil, err
	}
	r := &Result{Bodies: map[string][]byte{}}
	if err := checkSeal(manifest, seal, r); err != nil {
		return nil, err
	}
	if len(r.Manifest.Files) != 1 || r.Manifest.Files[0].Name != filepath.Base(path) ||
		r.Manifest.Files[0].SHA256 != sum(mbox) || r.Manifest.Files[0].Size != int64(len(mbox)) {
		return nil, fmt.Errorf("mbox file does not match files[] of the manifest")
	}
	var end int64
	for _, m := range r.Manifest.Messages {
		if m.MboxOffset == nil || m.MboxLength == nil {
			return nil, fmt.Errorf("%s: no mbox location", m.SHA256)
		}
		off, n := *m.MboxOffset, *m.MboxLength
		if off != end || off+n > int64(len(mbox)) {
			return nil, fmt.Errorf("%s: entry at %d+%d does not follow the previous one (%d)", m.SHA256, off, n, end)
		}
		end = off + n
		e := mbox[off : off+n]
		nl := bytes.IndexByte(e, '\n')
		if nl < 0 || !bytes.HasPrefix(e, []byte("From ")) || e[len(e)-1] != '\n' {
			return nil, fmt.Errorf("%s: entry is not a \"From \" line, the message, and a line feed", m.SHA256)
		}
		body := quotedFrom.ReplaceAll(e[nl+1:len(e)-1], []byte("$1"))
		if err := checkBody(m, body, r); err != nil {
			return nil, err
		}
	}
	if end != int64(len(mbox)) {
		return nil, fmt.Errorf("%d bytes of the mbox are in no entry", int64(len(mbox))-end)
	}
	// Splitting at "From " lines, as any mbox reader does, finds the
	// same number of messages: no line inside a message was left unquoted.
	if n := len(regexp.MustCompile(`(?m)^From `).FindAllIndex(mbox, -1)); n != len(r.Manifest.Messages) {
		return nil, fmt.Errorf("%d \"From \" lines for %d messages", n, len(r.Manifest.Messages))
	}
	return r, nil
}
