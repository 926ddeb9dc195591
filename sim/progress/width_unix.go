//go:build aix || darwin || dragonfly || freebsd || linux || netbsd || openbsd || solaris || zos

package progress

import (
	"os"

	"golang.org/x/sys/unix"
)

// terminalWidth returns the number of columns of the terminal f is on.
func terminalWidth(f *os.File) (int, bool) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, false
	}
	var ws *unix.Winsize
	var werr error
	// Control, unlike Fd, leaves the file's blocking mode alone.
	if err := rc.Control(func(fd uintptr) {
		ws, werr = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ)
	}); err != nil || werr != nil {
		return 0, false
	}
	return int(ws.Col), true
}
