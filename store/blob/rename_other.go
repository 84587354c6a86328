//go:build !linux

package blob

import (
	"errors"
	"os"
)

// renameNoReplace moves tmp to final unless final exists (a hard link,
// which never replaces an existing file); it reports whether it did.
func renameNoReplace(tmp, final string) (bool, error) {
	err := os.Link(tmp, final)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	return err == nil, err
}
