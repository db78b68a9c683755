// Package chromium opens Debian's Chromium, headless, for tests that look at
// what lvslab shows a browser (verify's HTML report, a forwarded lab).
package chromium

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvRequire makes a test fail, not pass over the browser, without chromium
// (make test sets it and installs chromium).
const EnvRequire = "LVSLAB_REQUIRE_CHROMIUM"

// Open starts a headless Chromium of its own for t and returns a chromedp
// context on a new tab, closed when t ends (a minute at most). Without
// chromium it fails t when EnvRequire is set, and otherwise returns ok false.
func Open(t testing.TB, width, height int) (ctx context.Context, ok bool) {
	t.Helper()
	browser, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("no chromium (apt-get install chromium), and %s is set", EnvRequire)
		}
		return nil, false
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(width, height),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	t.Cleanup(func() { cancel(); cancelTab(); cancelAlloc() })
	return ctx, true
}
