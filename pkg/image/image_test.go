package image

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

func TestRef(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                 "lvslab/node:v1.2.3",
		"268aa8b-dirty":          "lvslab/node:268aa8b-dirty",
		"":                       "lvslab/node:devel",
		"-x":                     "lvslab/node:_x",
		"a/b+c":                  "lvslab/node:a_b_c",
		strings.Repeat("a", 200): "lvslab/node:" + strings.Repeat("a", 128),
	} {
		if got := Ref(in); got != want {
			t.Errorf("Ref(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLdConf(t *testing.T) {
	d := t.TempDir()
	if err := os.MkdirAll(filepath.Join(d, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(d, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ld.so.conf", "# comment\ninclude conf.d/*.conf\n/opt/lib\n")
	write("conf.d/a.conf", "/lib/a-linux-gnu # multiarch\n\n/usr/lib/a-linux-gnu\n")
	got := strings.Join(ldConf(filepath.Join(d, "ld.so.conf"), 0), ":")
	if want := "/lib/a-linux-gnu:/usr/lib/a-linux-gnu:/opt/lib"; got != want {
		t.Errorf("%s, want %s", got, want)
	}
}

// archive reads a tar into name -> header (and contents of small files).
func archive(t *testing.T, b []byte) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out["/"+strings.TrimSuffix(h.Name, "/")] = h
	}
}

// resolve follows symlinks inside the archive, as the container would.
func resolve(t *testing.T, a map[string]*tar.Header, p string) *tar.Header {
	t.Helper()
	for range 40 {
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		cur := "/"
		restart := false
		for i, part := range parts {
			next := path.Join(cur, part)
			h, ok := a[next]
			if !ok {
				return nil
			}
			if h.Typeflag == tar.TypeSymlink {
				target := h.Linkname
				if !path.IsAbs(target) {
					target = path.Join(cur, target)
				}
				p = path.Join(append([]string{target}, parts[i+1:]...)...)
				restart = true
				break
			}
			cur = next
		}
		if !restart {
			return a[cur]
		}
	}
	return nil
}

func TestWriteBusybox(t *testing.T) {
	if _, err := os.Stat("/usr/bin/busybox"); err != nil {
		t.Skip("needs busybox (make deps)")
	}
	var buf bytes.Buffer
	st, err := Write(t.Context(), &buf, Options{Self: "/usr/bin/busybox", Tools: []Tool{
		{Name: "busybox", Path: "/usr/bin/busybox", Package: "busybox", Links: []string{"/bin/sh"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := archive(t, buf.Bytes())
	for _, p := range []string{"/bin/sh", "/usr/bin/busybox", "/etc/passwd", "/tmp"} {
		if resolve(t, a, p) == nil {
			t.Errorf("%s missing", p)
		}
	}
	if h := a["/tmp"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("/tmp: %+v", h)
	}
	// The loader and libc, wherever this host keeps them.
	d, _, err := newLibResolver().deps("/usr/bin/busybox")
	if err != nil || d.interp == "" || len(d.libs) == 0 {
		t.Fatalf("deps %+v %v", d, err)
	}
	for _, p := range append(d.libs, d.interp) {
		if h := resolve(t, a, p); h == nil || h.Typeflag != tar.TypeReg {
			t.Errorf("%s missing from the image", p)
		}
	}
	if st.Files < 4 || st.Bytes < 500_000 {
		t.Errorf("stats %+v", st)
	}
	// The same programs give the same archive.
	var again bytes.Buffer
	if _, err := Write(t.Context(), &again, Options{Self: "/usr/bin/busybox", Tools: []Tool{
		{Name: "busybox", Path: "/usr/bin/busybox", Package: "busybox", Links: []string{"/bin/sh"}},
	}}); err != nil || !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Errorf("a second write differs (%v)", err)
	}
}

// TestWriteNodeImage writes the real image and checks that every symlink in it
// resolves inside it and every ELF file finds its libraries there.
func TestWriteNodeImage(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range Tools(self) {
		if m, _ := filepath.Glob(tool.Path); len(m) == 0 {
			t.Skipf("needs %s (make deps)", tool.Package)
		}
	}
	var buf bytes.Buffer
	st, err := Write(t.Context(), &buf, Options{Self: self})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files, %.1f MB", st.Files, float64(st.Bytes)/1e6)
	a := archive(t, buf.Bytes())
	for name, h := range a {
		if h.Typeflag == tar.TypeSymlink && resolve(t, a, name) == nil {
			t.Errorf("%s -> %s dangles", name, h.Linkname)
		}
	}
	for _, p := range []string{"/usr/sbin/ipvsadm", "/usr/sbin/ip", "/usr/bin/curl", "/usr/sbin/iptables", "/usr/bin/tcpdump",
		"/usr/sbin/arping", "/usr/sbin/keepalived", "/bin/sh", "/usr/bin/httpd", SelfPath} {
		if h := resolve(t, a, p); h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 {
			t.Errorf("%s: no program there", p)
		}
	}
	if h := resolve(t, a, "/usr/sbin/iptables"); h == nil || !strings.HasSuffix(h.Name, "xtables-legacy-multi") {
		t.Errorf("iptables is not the legacy one: %+v", h)
	}
	r := newLibResolver()
	for name, h := range a {
		if h.Typeflag != tar.TypeReg || !isELF(name) {
			continue
		}
		d, _, err := r.deps(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, dep := range append(d.libs, d.interp) {
			if dep != "" && resolve(t, a, dep) == nil {
				t.Errorf("%s needs %s, missing from the image", name, dep)
			}
		}
	}
	if st.Bytes > 100e6 {
		t.Errorf("the image grew to %.1f MB", float64(st.Bytes)/1e6)
	}
}

func TestMissingTools(t *testing.T) {
	_, err := Write(t.Context(), io.Discard, Options{Self: "/usr/bin/busybox", Tools: []Tool{
		{Name: "frob", Path: "/nonexistent/frob", Package: "frobnicator"},
		{Name: "plugins", Path: "/nonexistent/*.so", Package: "frob-plugins", Glob: true},
	}})
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"frob (/nonexistent/frob: apt-get install frobnicator)", "apt-get install frob-plugins"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
}
