package report

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/lvslab/lvslab/internal/chromium"
)

// The report as a browser shows it: Debian's Chromium, headless, opens the
// file, asks for nothing but the file itself, shows the text the page holds,
// and takes a screenshot that is a real picture. make test sets
// LVSLAB_REQUIRE_CHROMIUM and installs chromium, so there it fails rather
// than skips.
func TestRenderInChromium(t *testing.T) {
	ctx, ok := chromium.Open(t, 1200, 900)
	if !ok {
		t.Skip("no chromium here (make test installs it)")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "report.html")
	var page bytes.Buffer
	if err := Write(&page, sample(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// Every request the page makes, from before it is opened until the
	// screenshot is taken.
	var mu sync.Mutex
	var requests []string
	lctx, stopListening := context.WithCancel(ctx)
	sent := chromedp.Events(lctx, network.RequestWillBeSent)
	listened := make(chan struct{})
	go func() {
		defer close(listened)
		for ev, err := range sent {
			if err != nil {
				return
			}
			mu.Lock()
			requests = append(requests, ev.Request.URL)
			mu.Unlock()
		}
	}()
	url := "file://" + file
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("verdict"))); err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	stopListening()
	<-listened
	mu.Lock()
	defer mu.Unlock()
	if len(requests) != 1 || requests[0] != url {
		t.Errorf("the page made requests %q; only the file itself may be loaded", requests)
	}
	for _, want := range []string{
		"lvslab verify: nat-steps-verify",
		"verdict: failed",
		"a check that failed <here>",
		"predicted", "observed",
		"ARP reply from", "8e:d0:67:73:de:d0", "captured frames (4)",
		"The director's IPVS table at the end",
		"IPVS connection entries",
		"kernel 6.1.176",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the page shows no %q", want)
		}
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() < 800 || b.Dy() < 900 {
		t.Errorf("screenshot %v: smaller than the page", b)
	}
	// Not blank: the bars are blue (#3b82f6), and they are there.
	blue := 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r>>8 < 0x50 && g>>8 > 0x70 && g>>8 < 0x90 && bl>>8 > 0xe0 {
				blue++
			}
		}
	}
	if blue < 100 {
		t.Errorf("the screenshot shows no bar chart (%d blue pixels sampled)", blue)
	}
	if out := os.Getenv("LVSLAB_REPORT_DIR"); out != "" {
		_ = os.WriteFile(filepath.Join(out, "report-screenshot.png"), shot, 0o644)
	}
	t.Logf("%d requests, screenshot %v, %d blue pixels sampled", len(requests), b, blue)
}
