// Package image builds the node image of container labs, lvslab/node:<version>,
// from this host's own installed programs and the libraries they load, and
// imports it into lvslab's engine. No registry and no mirror is involved.
//
// Why host binaries rather than debootstrap: the host already has every
// program a node runs (make deps installs them from Debian's packages, as it
// installs everything else lvslab needs), so the image takes a couple of
// seconds to write and holds about 60 MB, where debootstrap --variant=minbase
// needs Debian's mirror reachable and takes about 40 s for 230 MB, before
// installing the same programs again. The nodes run the very builds the
// sandbox kernel's own labs run.
//
// The image has iproute2 (ip), ipvsadm, curl, legacy iptables (the sandbox
// kernel has no nftables NAT), tcpdump, arping, keepalived, busybox (sh,
// the basic commands, and httpd: a real static-file and CGI web server in
// the same 0.8 MB binary, so a node needs no second web server package for
// pages of its own), and lvslab itself: its built-in web server (lvslab webd)
// and the container's init (lvslab node-init, the image's CMD).
package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Repository is the node image's name; its tag is lvslab's version.
const Repository = "lvslab/node"

// Ref is the node image of an lvslab version: lvslab/node:<version>, with
// characters a tag cannot hold replaced by '-'.
func Ref(version string) string {
	tag := []byte(version)
	for i, c := range tag {
		ok := c == '_' || c == '.' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !ok || i == 0 && (c == '.' || c == '-') {
			tag[i] = '_'
		}
	}
	if len(tag) == 0 {
		tag = []byte("devel")
	}
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return Repository + ":" + string(tag)
}

// SelfPath is where lvslab's own binary goes in the image.
const SelfPath = "/usr/local/bin/lvslab"

// Cmd is the image's command: lvslab as the container's init.
func Cmd() []string { return []string{SelfPath, "node-init"} }

// Tool is a program of the host that goes in the image, at the same path,
// with everything it loads.
type Tool struct {
	Name    string   // what it is, for messages
	Path    string   // the host's program (or, with Glob, a pattern of files)
	As      string   // its path in the image, when not Path
	Package string   // the Debian package that installs it
	Links   []string // more names for it in the image (absolute), pointing at Path
	Glob    bool     // Path is a glob of files the program loads at run time (plugins)
}

// busyboxApplets are the busybox commands a node gets as names of their own:
// the shell and the basic commands (the others stay reachable as busybox CMD).
func busyboxApplets() []string {
	return strings.Fields(`sh ash cat cp mv rm ln ls mkdir rmdir touch chmod chown echo printf test [ [[
		true false sleep env id whoami hostname uname date head tail wc sort uniq cut tr grep egrep fgrep
		sed awk find xargs ps kill killall pidof top free df du mount umount dmesg stat readlink realpath
		basename dirname tee seq timeout nc wget ping ping6 traceroute traceroute6 nslookup vi less more
		tar gzip gunzip zcat yes watch usleep nproc md5sum sha256sum hexdump xxd od diff which httpd
		stty clear reset`) // the terminal's, for lvslab shell
}

// Tools are the programs of the node image, for a host where lvslab's binary is self.
func Tools(self string) []Tool {
	legacy := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, "/usr/sbin/"+n)
		}
		return out
	}
	var applets []string
	for _, a := range busyboxApplets() {
		applets = append(applets, "/usr/bin/"+a)
	}
	applets = append(applets, "/bin/sh") // the same as /usr/bin/sh where /bin -> usr/bin
	return []Tool{
		{Name: "lvslab", Path: self, As: SelfPath, Package: "lvslab (make build)"},
		{Name: "busybox", Path: "/usr/bin/busybox", Package: "busybox", Links: applets},
		{Name: "ip", Path: "/usr/sbin/ip", Package: "iproute2"},
		{Name: "ipvsadm", Path: "/usr/sbin/ipvsadm", Package: "ipvsadm"},
		{Name: "curl", Path: "/usr/bin/curl", Package: "curl"},
		// The legacy backend under the usual names: the sandbox kernel has no
		// nftables NAT, and the image has no alternatives system to choose.
		{Name: "iptables (legacy)", Path: "/usr/sbin/xtables-legacy-multi", Package: "iptables", Links: legacy(
			"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore",
			"iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
			"ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore")},
		{Name: "iptables extensions", Path: "/usr/lib/*/xtables/*.so", Package: "iptables", Glob: true},
		{Name: "tcpdump", Path: "/usr/bin/tcpdump", Package: "tcpdump"},
		{Name: "arping", Path: "/usr/sbin/arping", Package: "arping"},
		{Name: "keepalived", Path: "/usr/sbin/keepalived", Package: "keepalived"},
	}
}

// hostFiles are small files of the host's /etc that the tools read: protocol
// and service names (iptables -p tcp, tcpdump), and iproute2's tables.
func hostFiles() []string {
	return []string{"/etc/protocols", "/etc/services", "/etc/ethertypes", "/etc/iproute2"}
}

// Options say what goes in the image.
type Options struct {
	// Self is lvslab's binary (the node's web server and init); the running
	// executable when empty.
	Self string
	// Tools replace Tools(Self) when set (tests build small images).
	Tools []Tool
}

// Stats describe a written image.
type Stats struct {
	Files int   // regular files
	Bytes int64 // their total size
}

// entry is one file of the image.
type entry struct {
	hdr  tar.Header
	from string // the host file to copy, for a regular file
	data []byte // the contents of a generated file
}

// rootfs collects the image's files before they are written, parents first.
type rootfs struct {
	entries map[string]*entry // by path in the image, without the leading '/'
	libs    *libResolver
	done    map[string]bool // host files already added with their dependencies
}

// mtime is every entry's modification time: the same programs give the same
// layer, whenever they are written.
func mtime() time.Time { return time.Unix(0, 0).UTC() }

func (r *rootfs) dir(p string, mode int64) {
	name := strings.TrimPrefix(path.Clean(p), "/")
	if name == "" || name == "." {
		return
	}
	if e, ok := r.entries[name]; ok && e.hdr.Typeflag != tar.TypeDir {
		return // a symlink (lib -> usr/lib) stands there already
	}
	r.dir(path.Dir(p), 0o755)
	if _, ok := r.entries[name]; !ok {
		r.entries[name] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime()}}
	}
}

func (r *rootfs) symlink(p, target string) {
	name := strings.TrimPrefix(path.Clean(p), "/")
	r.dir(path.Dir(p), 0o755)
	r.entries[name] = &entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: mtime()}}
}

func (r *rootfs) file(p string, mode int64, data []byte) {
	name := strings.TrimPrefix(path.Clean(p), "/")
	r.dir(path.Dir(p), 0o755)
	r.entries[name] = &entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime()}, data: data}
}

// copyFile puts the host's regular file from at p in the image.
func (r *rootfs) copyFile(p, from string, fi fs.FileInfo) {
	name := strings.TrimPrefix(path.Clean(p), "/")
	r.dir(path.Dir(p), 0o755)
	r.entries[name] = &entry{
		hdr:  tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(fi.Mode().Perm() | fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid)), Size: fi.Size(), ModTime: mtime()},
		from: from,
	}
}

// host puts a host path in the image at the same path, as the host has it:
// each symlink on the way (lib -> usr/lib, /usr/sbin/ip -> /bin/ip) becomes the
// same symlink in the image. A directory comes with everything under it. ELF
// files come with their loader and libraries. It returns the real path.
func (r *rootfs) host(p string) (string, error) {
	real, err := r.walk(p, 0)
	if err != nil {
		return "", err
	}
	if r.done[real] {
		return real, nil
	}
	r.done[real] = true
	fi, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		ents, err := os.ReadDir(real)
		if err != nil {
			return "", err
		}
		r.dir(real, int64(fi.Mode().Perm()))
		for _, e := range ents {
			if _, err := r.host(filepath.Join(real, e.Name())); err != nil {
				return "", err
			}
		}
		return real, nil
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", real)
	}
	r.copyFile(real, real, fi)
	return real, r.deps(real)
}

// hostAs puts the host's regular file from at p in the image (lvslab's own
// binary, wherever it was built), with what it loads.
func (r *rootfs) hostAs(p, from string) error {
	fi, err := os.Stat(from)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", from)
	}
	r.copyFile(p, from, fi)
	return r.deps(from)
}

// deps adds what the ELF file at p loads.
func (r *rootfs) deps(p string) error {
	d, _, err := r.libs.deps(p)
	if err != nil {
		return err
	}
	for _, dep := range append(d.libs, d.interp) {
		if dep == "" {
			continue
		}
		if _, err := r.host(dep); err != nil {
			return fmt.Errorf("%s needs %s: %w", p, dep, err)
		}
	}
	return nil
}

// walk resolves p component by component, recording each symlink it meets in
// the image, and returns the real path.
func (r *rootfs) walk(p string, depth int) (string, error) {
	if depth > 40 {
		return "", fmt.Errorf("%s: too many levels of symbolic links", p)
	}
	p = filepath.Clean(p)
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		r.symlink(next, target)
		if !filepath.IsAbs(target) {
			target = filepath.Join(cur, target)
		}
		resolved, err := r.walk(target, depth+1)
		if err != nil {
			return "", err
		}
		cur = filepath.Join(append([]string{resolved}, parts[i+1:]...)...)
		return r.walk(cur, depth+1)
	}
	return cur, nil
}

// base lays out what every node has besides the tools: the directories a
// system expects, root's account, and /var/run.
func (r *rootfs) base() {
	for _, d := range []struct {
		p    string
		mode int64
	}{
		{"/dev", 0o755}, {"/proc", 0o555}, {"/sys", 0o555}, {"/run", 0o755}, {"/tmp", 0o1777},
		{"/root", 0o700}, {"/etc/keepalived", 0o755}, {"/var/tmp", 0o1777}, {"/var/lib", 0o755},
		{"/var/log", 0o755}, {"/var/www", 0o755}, {"/usr/local/bin", 0o755},
	} {
		r.dir(d.p, d.mode)
	}
	r.symlink("/var/run", "../run")
	r.file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))
	r.file("/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	r.file("/etc/os-release", 0o644, []byte("NAME=\"lvslab node\"\nID=lvslab-node\nPRETTY_NAME=\"lvslab node (the host's programs)\"\n"))
}

// collect gathers the image's files, reporting every missing program with
// the package that installs it.
func collect(ctx context.Context, o Options) (*rootfs, error) {
	self := o.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("image: lvslab's own binary: %w", err)
		}
	}
	tools := o.Tools
	if tools == nil {
		tools = Tools(self)
	}
	r := &rootfs{entries: map[string]*entry{}, libs: newLibResolver(), done: map[string]bool{}}
	r.base()
	var missing []string
	for _, t := range tools {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		paths := []string{t.Path}
		if t.Glob {
			paths, _ = filepath.Glob(t.Path)
			if len(paths) == 0 {
				missing = append(missing, fmt.Sprintf("%s (%s: apt-get install %s)", t.Name, t.Path, t.Package))
				continue
			}
		}
		for _, p := range paths {
			if t.As != "" {
				if err := r.hostAs(t.As, p); errors.Is(err, fs.ErrNotExist) {
					missing = append(missing, fmt.Sprintf("%s (%s: %s)", t.Name, p, t.Package))
				} else if err != nil {
					return nil, fmt.Errorf("image: %s: %w", t.Name, err)
				}
				continue
			}
			real, err := r.host(p)
			if errors.Is(err, fs.ErrNotExist) {
				missing = append(missing, fmt.Sprintf("%s (%s: apt-get install %s)", t.Name, p, t.Package))
				continue
			} else if err != nil {
				return nil, fmt.Errorf("image: %s: %w", t.Name, err)
			}
			for _, l := range t.Links {
				// In the directory the host really has there (/bin/sh in
				// /usr/bin where /bin -> usr/bin).
				dir, err := r.walk(path.Dir(l), 0)
				if err != nil {
					return nil, fmt.Errorf("image: %s: %w", l, err)
				}
				l = path.Join(dir, path.Base(l))
				if _, taken := r.entries[strings.TrimPrefix(l, "/")]; taken {
					continue // a program of its own (busybox ip vs iproute2's)
				}
				target := real
				if path.Dir(l) == path.Dir(real) {
					target = path.Base(real)
				}
				r.symlink(l, target)
			}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("image: missing on this host: %s", strings.Join(missing, "; "))
	}
	for _, f := range hostFiles() {
		if _, err := os.Lstat(f); err != nil {
			continue // optional
		}
		if _, err := r.host(f); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	return r, nil
}

// Write writes the node image's root file system to w as a tar archive, the
// form docker import takes.
func Write(ctx context.Context, w io.Writer, o Options) (Stats, error) {
	var st Stats
	r, err := collect(ctx, o)
	if err != nil {
		return st, err
	}
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	slices.Sort(names) // parents before their children
	tw := tar.NewWriter(w)
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		e := r.entries[n]
		e.hdr.Uname, e.hdr.Gname = "root", "root"
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return st, fmt.Errorf("image: %s: %w", n, err)
		}
		if e.hdr.Typeflag != tar.TypeReg {
			continue
		}
		st.Files++
		st.Bytes += e.hdr.Size
		if e.from == "" {
			if _, err := tw.Write(e.data); err != nil {
				return st, fmt.Errorf("image: %s: %w", n, err)
			}
			continue
		}
		if err := copyInto(tw, e.from, e.hdr.Size); err != nil {
			return st, fmt.Errorf("image: %s: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return st, fmt.Errorf("image: %w", err)
	}
	return st, nil
}

// copyInto copies exactly size bytes of a host file (as it was when listed).
func copyInto(w io.Writer, from string, size int64) error {
	f, err := os.Open(from)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err == nil && n != size {
		err = fmt.Errorf("%s changed while it was read (%d of %d bytes)", from, n, size)
	}
	return err
}
