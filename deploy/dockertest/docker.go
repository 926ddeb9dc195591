// Package dockertest holds a multi-container test of the coordinator
// cluster: the Cohort image, three coordinators and the site agents on a
// bridge network of their own, with `docker kill` and `docker network
// disconnect` as the faults. See ha_test.go and deploy/README.md.
//
// This file is a small helper for driving the docker command-line client.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Docker runs commands of the docker client found on PATH.
func Docker(ctx context.Context, args ...string) (string, error) {
	return DockerInput(ctx, nil, args...)
}

// DockerInput runs a docker command with stdin as its input. It returns
// the command's output with surrounding space trimmed. On failure the
// error names the command and holds what it wrote on stderr.
func DockerInput(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...) // #nosec G204 -- test harness: runs the docker client with arguments the test itself builds
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A killed docker client must not keep the test waiting for pipes.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Logs returns the last tail lines a container wrote, stdout and stderr
// together, or why they could not be read.
func Logs(ctx context.Context, name string, tail int) string {
	out, err := exec.CommandContext(ctx, "docker", "logs", "--tail", strconv.Itoa(tail), name).CombinedOutput() // #nosec G204 -- test harness: docker logs of a container the test created
	if err != nil {
		return fmt.Sprintf("%s(docker logs %s: %v)", out, name, err)
	}
	return string(out)
}

// CreateNetwork creates a user-defined bridge network and returns its
// subnet. Docker gives a container a fixed address (--ip) only on a network
// whose subnet was set when it was created. So the network is first created
// without a subnet, to let Docker pick a range that is free on this host,
// then removed and created again with that range.
func CreateNetwork(ctx context.Context, name string, labels ...string) (netip.Prefix, error) {
	create := []string{"network", "create", "--driver", "bridge"}
	for _, l := range labels {
		create = append(create, "--label", l)
	}
	var lastErr error
	for range 3 {
		sub, err := pickSubnet(ctx, name, create)
		if err != nil {
			return netip.Prefix{}, err
		}
		// Another client may take the range in between; then try again.
		if _, lastErr = Docker(ctx, append(create, "--subnet", sub.String(), name)...); lastErr == nil {
			return sub, nil
		}
	}
	return netip.Prefix{}, lastErr
}

// pickSubnet creates the network name with the command create, reads the
// IPv4 subnet Docker chose for it and removes the network again.
func pickSubnet(ctx context.Context, name string, create []string) (netip.Prefix, error) {
	if _, err := Docker(ctx, append(slices.Clone(create), name)...); err != nil {
		return netip.Prefix{}, err
	}
	out, err := Docker(ctx, "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", name)
	if _, rmErr := Docker(ctx, "network", "rm", name); err == nil {
		err = rmErr
	}
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Addr().Is4() && p.Bits() <= 24 {
			return p.Masked(), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("network %s: no IPv4 subnet of /24 or larger in %q", name, out)
}

// HostAddr returns the n-th address of subnet p (n between 2 and 254: the
// first address is the gateway).
func HostAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr().As4()
	a[3] += byte(n)
	return netip.AddrFrom4(a)
}

// Archive builds a tar stream for `docker cp - CONTAINER:/`. Docker keeps
// the owner written in each entry, so the files can be given to the
// image's unprivileged user without any chown on the host.
type Archive struct {
	buf      bytes.Buffer
	tw       *tar.Writer
	uid, gid int
	dirs     map[string]bool
	err      error
}

// NewArchive starts an archive whose entries are owned by uid:gid.
func NewArchive(uid, gid int) *Archive {
	a := &Archive{uid: uid, gid: gid, dirs: map[string]bool{}}
	a.tw = tar.NewWriter(&a.buf)
	return a
}

// Dir adds the directory name (a slash-separated path relative to the
// container's root) with the given mode.
func (a *Archive) Dir(name string, mode fs.FileMode) {
	name = path.Clean(name)
	if a.err != nil || a.dirs[name] {
		return
	}
	a.dirs[name] = true
	a.err = a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: int64(mode.Perm()),
		Uid: a.uid, Gid: a.gid, ModTime: time.Now()})
}

// File adds the regular file name with data and mode. Its directory must
// have been added first, or exist in the image.
func (a *Archive) File(name string, data []byte, mode fs.FileMode) {
	if a.err != nil {
		return
	}
	if a.err = a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path.Clean(name), Mode: int64(mode.Perm()),
		Size: int64(len(data)), Uid: a.uid, Gid: a.gid, ModTime: time.Now()}); a.err == nil {
		_, a.err = a.tw.Write(data)
	}
}

// CopyFile adds the host file src as name, with mode.
func (a *Archive) CopyFile(name, src string, mode fs.FileMode) {
	if a.err != nil {
		return
	}
	b, err := os.ReadFile(src)
	if err != nil {
		a.err = err
		return
	}
	a.File(name, b, mode)
}

// Tree adds the host directory src and everything in it as name:
// directories with mode 0700, files with mode 0600.
func (a *Archive) Tree(name, src string) {
	if a.err != nil {
		return
	}
	a.err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		dst := path.Join(name, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			a.Dir(dst, 0o700)
		case d.Type().IsRegular():
			a.CopyFile(dst, p, 0o600)
		default:
			return fmt.Errorf("%s: not a regular file or directory", p)
		}
		return a.err
	})
}

// Bytes ends the archive and returns it.
func (a *Archive) Bytes() ([]byte, error) {
	if a.err == nil {
		a.err = a.tw.Close()
	}
	if a.err != nil {
		return nil, fmt.Errorf("archive: %w", a.err)
	}
	return a.buf.Bytes(), nil
}
