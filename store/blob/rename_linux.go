package blob

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace moves tmp to final unless final exists; it reports
// whether it moved it. renameat2(RENAME_NOREPLACE) does that atomically;
// file systems without it get a hard link, which never replaces either.
func renameNoReplace(tmp, final string) (bool, error) {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return false, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		return linkNoReplace(tmp, final)
	default:
		return false, err
	}
}

func linkNoReplace(tmp, final string) (bool, error) {
	err := os.Link(tmp, final)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	return err == nil, err
}
