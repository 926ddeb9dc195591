//go:build !(aix || darwin || dragonfly || freebsd || linux || netbsd || openbsd || solaris || zos)

package progress

import "os"

// terminalWidth is unknown on this platform; the bar uses 80 columns.
func terminalWidth(*os.File) (int, bool) { return 0, false }
