package image

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// libResolver finds the shared libraries a program needs as the dynamic
// loader would: DT_RPATH (without DT_RUNPATH), DT_RUNPATH, then the system's
// directories (/etc/ld.so.conf and the loader's defaults). It reads ELF
// headers only, and runs nothing (ldd would run the loader on each file).
type libResolver struct {
	system []string          // the system's library directories, in order
	found  map[string]string // "class/machine/name" -> path
}

func newLibResolver() *libResolver {
	dirs := ldConf("/etc/ld.so.conf", 0)
	dirs = append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
	return &libResolver{system: dirs, found: map[string]string{}}
}

// ldConf reads the library directories of an ld.so.conf, following its includes.
func ldConf(file string, depth int) []string {
	f, err := os.Open(file)
	if err != nil || depth > 8 {
		return nil
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "include"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			for _, pat := range strings.Fields(rest) {
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(filepath.Dir(file), pat)
				}
				matches, _ := filepath.Glob(pat)
				for _, m := range matches {
					dirs = append(dirs, ldConf(m, depth+1)...)
				}
			}
			continue
		}
		if line != "" && filepath.IsAbs(line) {
			dirs = append(dirs, line)
		}
	}
	return dirs
}

// elfDeps is what loading an ELF program or library takes.
type elfDeps struct {
	interp string   // the dynamic loader (PT_INTERP), for programs
	libs   []string // the paths of its DT_NEEDED libraries
}

// deps returns the loader and the libraries path needs, directly; ok is false
// for a file that is not ELF (a script), which needs nothing here.
func (r *libResolver) deps(path string) (d elfDeps, ok bool, err error) {
	if !isELF(path) {
		return d, false, nil
	}
	f, err := elf.Open(path)
	if err != nil {
		return d, false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return d, true, fmt.Errorf("read %s: interpreter: %w", path, err)
			}
			d.interp = string(bytes.TrimRight(b, "\x00"))
		}
	}
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		return d, true, nil // statically linked: no dynamic section
	}
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	var dirs []string
	if len(runpath) == 0 {
		rpath, _ := f.DynString(elf.DT_RPATH)
		dirs = append(dirs, splitPath(rpath, path)...)
	}
	dirs = append(dirs, splitPath(runpath, path)...)
	dirs = append(dirs, r.system...)
	for _, name := range needed {
		lib, err := r.find(name, f.Class, f.Machine, dirs)
		if err != nil {
			return d, true, fmt.Errorf("%s needs %s: %w", path, name, err)
		}
		d.libs = append(d.libs, lib)
	}
	return d, true, nil
}

// isELF reports whether a file starts with the ELF magic number.
func isELF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == elf.ELFMAG
}

// splitPath splits DT_RPATH/DT_RUNPATH values, expanding $ORIGIN.
func splitPath(values []string, file string) []string {
	origin := filepath.Dir(file)
	if real, err := filepath.EvalSymlinks(file); err == nil {
		origin = filepath.Dir(real)
	}
	var out []string
	for _, v := range values {
		for _, d := range strings.Split(v, ":") {
			d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin)
			if d != "" {
				out = append(out, d)
			}
		}
	}
	return out
}

// find looks for a library of the same ELF class and machine in dirs.
func (r *libResolver) find(name string, class elf.Class, machine elf.Machine, dirs []string) (string, error) {
	key := fmt.Sprintf("%d/%d/%s", class, machine, name)
	if p, ok := r.found[key]; ok {
		return p, nil
	}
	if strings.Contains(name, "/") {
		dirs, name = []string{filepath.Dir(name)}, filepath.Base(name)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		same := f.Class == class && f.Machine == machine
		f.Close()
		if same {
			r.found[key] = p
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %s", strings.Join(dirs, ":"))
}
