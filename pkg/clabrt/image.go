package clabrt

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"

	dockerimage "github.com/docker/docker/api/types/image"
	dockerC "github.com/docker/docker/client"
)

// EnsureImage imports the node image into the engine unless it has it: a root
// file system of the host's busybox (sh, sleep and the small tools a node is
// poked with) and the libraries it loads, with sleep infinity as its command
// (an imported image has none).
func EnsureImage(ctx context.Context, cli *dockerC.Client, ref string) error {
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin", "sbin", "lib", "lib64", "lib/x86_64-linux-gnu", "etc", "tmp", "proc", "sys", "dev", "run", "root"} {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
	}
	files := map[string]string{"/usr/bin/busybox": "bin/busybox"}
	libs, err := elfNeeds("/usr/bin/busybox")
	if err != nil {
		return fmt.Errorf("node image: %w", err)
	}
	for _, l := range libs {
		files[l] = l[1:]
	}
	for src, dst := range files {
		real, err := filepath.EvalSymlinks(src)
		if err != nil {
			return fmt.Errorf("node image: %w", err)
		}
		b, err := os.ReadFile(real)
		if err != nil {
			return fmt.Errorf("node image: %w", err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: dst, Mode: 0o755, Size: int64(len(b))}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	for _, a := range []string{"sh", "sleep", "ip", "ls", "cat", "hostname", "ps", "ping", "wget"} {
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	rc, err := cli.ImageImport(ctx, dockerimage.ImportSource{Source: &buf, SourceName: "-"}, ref,
		dockerimage.ImportOptions{Changes: []string{`CMD ["/bin/sleep","infinity"]`}})
	if err != nil {
		return fmt.Errorf("node image %s: import: %w", ref, err)
	}
	defer rc.Close()
	_, err = bytes.NewBuffer(nil).ReadFrom(rc)
	return err
}

// elfNeeds lists the files a dynamically linked program loads: its
// interpreter and the libraries it needs, found where Debian keeps them.
func elfNeeds(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, err
			}
			out = append(out, string(bytes.TrimRight(b, "\x00")))
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		found := ""
		for _, dir := range []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib"} {
			if _, err := os.Stat(filepath.Join(dir, l)); err == nil {
				found = filepath.Join(dir, l)
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("%s needs %s, not found", path, l)
		}
		out = append(out, found)
	}
	return out, nil
}
