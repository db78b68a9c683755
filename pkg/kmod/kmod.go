// Package kmod loads kernel modules with finit_module, resolving dependencies from
// modules.dep, without running modprobe (a process start costs ~0.1 s in the
// sandbox kernel, and its modules live outside /lib/modules).
package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Loader loads modules from Dir (a /lib/modules/<release> tree).
type Loader struct {
	Dir  string
	deps map[string][]string // module name -> paths: the module's deps (deepest last), then itself
}

// DefaultDir is the module tree of the running kernel.
func DefaultDir() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
}

func modName(path string) string {
	base := filepath.Base(path)
	base = base[:strings.Index(base, ".ko")]
	return strings.ReplaceAll(base, "-", "_")
}

func (l *Loader) index() error {
	if l.deps != nil {
		return nil
	}
	f, err := os.Open(filepath.Join(l.Dir, "modules.dep"))
	if err != nil {
		return fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	l.deps = map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		l.deps[modName(mod)] = append([]string{mod}, strings.Fields(deps)...)
	}
	return sc.Err()
}

// Load loads each named module and its dependencies. Modules already loaded or
// built in are fine. It tries every module and reports every failure.
func (l *Loader) Load(names ...string) error {
	if err := l.index(); err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, l.load(name))
	}
	return errors.Join(errs...)
}

func (l *Loader) load(name string) error {
	paths, ok := l.deps[strings.ReplaceAll(name, "-", "_")]
	if !ok {
		if _, err := os.Stat(filepath.Join("/sys/module", name)); err == nil {
			return nil // built in
		}
		return fmt.Errorf("kmod: module %s not found in %s", name, l.Dir)
	}
	// Dependencies are listed with the deepest last: load from the end.
	for i := len(paths) - 1; i >= 0; i-- {
		if err := insmod(filepath.Join(l.Dir, paths[i])); err != nil {
			return fmt.Errorf("kmod: load %s (for %s): %w", modName(paths[i]), name, err)
		}
	}
	return nil
}

func insmod(path string) error {
	if _, err := os.Stat(filepath.Join("/sys/module", modName(path))); err == nil {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".ko.xz") || strings.HasSuffix(path, ".ko.zst") || strings.HasSuffix(path, ".ko.gz") {
		flags = 4 // MODULE_INIT_COMPRESSED_FILE: the kernel decompresses
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}
