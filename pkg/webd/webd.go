// Package webd is the lab's built-in web server: one process per web node serves
// listening sockets opened inside that node's namespace, and answers every
// request with the node's name, as the seed lab's test pages do. Plain HTTP is
// served by a lean event loop of its own (plain.go), HTTPS by net/http.
package webd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lvslab/lvslab/internal/epoll"
)

// EnvListeners tells the daemon which inherited descriptors belong to which node
// and what they serve: "web1/http,web1/https,web2/udp" means fd 3 serves HTTP for
// web1, fd 4 HTTPS for web1 and fd 5 UDP for web2.
const EnvListeners = "LVSLAB_WEBD_LISTENERS"

// EnvListen is the other way to say what to serve, for a daemon started where
// no descriptor can be handed over (inside a container, by docker exec):
// "web1/http/80,web1/udp/53" makes it open those sockets itself, on every
// address of its network namespace.
const EnvListen = "LVSLAB_WEBD_LISTEN"

// EnvLog names the file the daemon's output goes to once it is ready. With it,
// the daemon prints Ready on its standard output when every socket listens,
// then writes only to that file: the caller that waited for the line may go.
const EnvLog = "LVSLAB_WEBD_LOG"

// Ready is the line the daemon prints when every socket listens (with EnvLog).
const Ready = "lvslab webd ready"

// Mode is how the web server answers HTTP: as it should, with an error, or
// not at all. Steps set it, to fault a real server for health checks.
type Mode int32

// The modes, and the signals that set them (SIGHUP, SIGUSR1, SIGUSR2).
const (
	ModeOK    Mode = iota // 200 with the node's name
	ModeError             // 500 Internal Server Error
	ModeStall             // the request is read and never answered
)

func (m Mode) String() string {
	switch m {
	case ModeError:
		return "500 (error)"
	case ModeStall:
		return "nothing (stall)"
	}
	return "200 (ok)"
}

// ModeSignal is the signal that puts a running daemon in mode m.
func ModeSignal(m Mode) syscall.Signal {
	switch m {
	case ModeError:
		return syscall.SIGUSR1
	case ModeStall:
		return syscall.SIGUSR2
	}
	return syscall.SIGHUP
}

// Faults holds a daemon's mode; the zero value answers as it should.
type Faults struct{ mode atomic.Int32 }

// Set changes the mode.
func (f *Faults) Set(m Mode) { f.mode.Store(int32(m)) }

// Mode is the current mode.
func (f *Faults) Mode() Mode { return Mode(f.mode.Load()) }

// Kinds of listeners.
const (
	KindHTTP  = "http"
	KindHTTPS = "https"
	KindUDP   = "udp"
)

// Listener is one inherited socket.
type Listener struct {
	Node, Kind string
	Stream     net.Listener   // http, https
	Packet     net.PacketConn // udp
}

// Handler answers every request with name and a newline, and names the node in
// the X-Served-By header.
func Handler(name string) http.Handler { return handler(name, &Faults{}) }

func handler(name string, f *Faults) http.Handler {
	body := []byte(name + "\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch f.Mode() {
		case ModeError:
			w.Header().Set("X-Served-By", name)
			http.Error(w, "500 Internal Server Error (lvslab fault)", http.StatusInternalServerError)
			return
		case ModeStall:
			<-r.Context().Done() // until the client gives up
			return
		}
		w.Header().Set("X-Served-By", name)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
}

// Serve serves each listener with the handler of its node until ctx ends.
func Serve(ctx context.Context, listeners []Listener) error {
	return ServeFaults(ctx, listeners, &Faults{})
}

// ServeFaults is Serve, answering HTTP as f's mode says.
func ServeFaults(ctx context.Context, listeners []Listener, f *Faults) error {
	errc := make(chan error, len(listeners)+1)
	var closers []func()
	var cert *tls.Certificate
	var plain []Listener
	for _, l := range listeners {
		switch l.Kind {
		case KindHTTP:
			plain = append(plain, l)
		case KindHTTPS:
			srv := &http.Server{Handler: handler(l.Node, f), ReadHeaderTimeout: headerTimeout}
			srv.SetKeepAlivesEnabled(false) // one request per connection, as the lab's clients make
			if cert == nil {
				c, err := SelfSigned()
				if err != nil {
					return err
				}
				cert = &c
			}
			ln := tls.NewListener(l.Stream, &tls.Config{Certificates: []tls.Certificate{*cert}})
			closers = append(closers, func() { srv.Close() })
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					errc <- fmt.Errorf("webd %s %s on %s: %w", l.Node, l.Kind, ln.Addr(), err)
				}
			}()
		case KindUDP:
			pc := l.Packet
			closers = append(closers, func() { pc.Close() })
			go func() {
				if err := ServeUDP(pc, l.Node); err != nil && !errors.Is(err, net.ErrClosed) {
					errc <- fmt.Errorf("webd %s udp on %s: %w", l.Node, pc.LocalAddr(), err)
				}
			}()
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	plainDone := make(chan struct{})
	go func() {
		defer close(plainDone)
		if len(plain) > 0 {
			if err := servePlain(ctx, plain, f); err != nil {
				errc <- err
			}
		}
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, c := range closers {
		c()
	}
	cancel()
	<-plainDone
	return err
}

// ServeUDP answers every datagram on pc with the node's name.
func ServeUDP(pc net.PacketConn, name string) error {
	buf := make([]byte, 64<<10)
	reply := []byte(name + "\n")
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := pc.WriteTo(reply, from); err != nil {
			return err
		}
	}
}

// SelfSigned makes a self-signed certificate for the lab's HTTPS servers.
func SelfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "lvslab"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"lvslab"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Main is the daemon's entry point: it serves the listeners it inherited. The
// daemon runs under SCHED_BATCH, so that a client's many connections wake it
// without preempting the client each time (see epoll.Batch): it then serves
// them in batches.
func Main(ctx context.Context) error {
	if _, err := epoll.Batch(); err != nil {
		fmt.Fprintln(os.Stderr, "webd:", err) // slower, not wrong: go on
	}
	var ls []Listener
	var err error
	if spec := os.Getenv(EnvListen); spec != "" {
		ls, err = Listen(spec)
	} else {
		ls, err = inherited(os.Getenv(EnvListeners))
	}
	if err != nil {
		return err
	}
	if log := os.Getenv(EnvLog); log != "" {
		if err := readyThenLog(log); err != nil {
			return err
		}
	}
	// Signals set the mode (steps fault a real server with them).
	f := &Faults{}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, ModeSignal(ModeOK), ModeSignal(ModeError), ModeSignal(ModeStall))
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			for _, m := range []Mode{ModeOK, ModeError, ModeStall} {
				if sig == ModeSignal(m) {
					f.Set(m)
					fmt.Fprintf(os.Stderr, "webd: %v: answering %s\n", sig, m)
				}
			}
		}
	}()
	return ServeFaults(ctx, ls, f)
}

// inherited makes the listeners of descriptors 3 on, as EnvListeners names them.
func inherited(env string) ([]Listener, error) {
	specs := strings.Split(env, ",")
	if env == "" {
		return nil, fmt.Errorf("webd: neither %s nor %s is set", EnvListeners, EnvListen)
	}
	var ls []Listener
	for i, spec := range specs {
		name, kind, _ := strings.Cut(spec, "/")
		f := os.NewFile(uintptr(3+i), "listener-"+spec)
		l := Listener{Node: name, Kind: kind}
		var err error
		switch kind {
		case KindHTTP, KindHTTPS:
			l.Stream, err = net.FileListener(f)
		case KindUDP:
			l.Packet, err = net.FilePacketConn(f)
		default:
			err = fmt.Errorf("unknown kind %q", kind)
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("webd: listener %d (%s): %w", i, spec, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Listen opens the sockets an EnvListen value names ("web1/http/80,...").
// On failure it closes those it opened.
func Listen(spec string) (ls []Listener, err error) {
	defer func() {
		if err != nil {
			for _, l := range ls {
				l.close()
			}
			ls = nil
		}
	}()
	for _, item := range strings.Split(spec, ",") {
		parts := strings.Split(item, "/")
		if len(parts) != 3 {
			return ls, fmt.Errorf("webd: %s: %q is not node/kind/port", EnvListen, item)
		}
		port, perr := strconv.ParseUint(parts[2], 10, 16)
		if perr != nil {
			return ls, fmt.Errorf("webd: %s: %q: port: %w", EnvListen, item, perr)
		}
		l := Listener{Node: parts[0], Kind: parts[1]}
		addr := ":" + strconv.FormatUint(port, 10)
		switch l.Kind {
		case KindHTTP, KindHTTPS:
			l.Stream, err = net.Listen("tcp", addr)
		case KindUDP:
			l.Packet, err = net.ListenPacket("udp", addr)
		default:
			err = fmt.Errorf("unknown kind %q", l.Kind)
		}
		if err != nil {
			return ls, fmt.Errorf("webd: %s: %w", item, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func (l Listener) close() {
	if l.Stream != nil {
		l.Stream.Close()
	}
	if l.Packet != nil {
		l.Packet.Close()
	}
}

// readyThenLog prints Ready on standard output, then points standard output
// and error at the file log (made with its directory if missing).
func readyThenLog(log string) error {
	if err := os.MkdirAll(filepath.Dir(log), 0o755); err != nil {
		return fmt.Errorf("webd: log: %w", err)
	}
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("webd: log: %w", err)
	}
	defer f.Close()
	fmt.Fprintln(os.Stdout, Ready)
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("webd: log: %w", err)
		}
	}
	return nil
}
