package imapdial

import (
	"fmt"
	"os"
	"strings"
)

// ReadPassword returns the first line of the password file given by the
// command-line flag named flag, without its line end. The file keeps the
// password out of the process list and the shell history.
func ReadPassword(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(pw, "\r"), nil
}
