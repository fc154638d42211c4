// Package freeport picks ports for servers whose address must be named before they
// bind it: a fake source the target is told to relay to, a fake DNS, an internal
// listener in a generated configuration.
//
// A port taken by listening on port 0 and released comes from the kernel's ephemeral
// range, the same range every outgoing connection's local port comes from; between
// the release and the owner's bind, any connection the machine opens can take it
// (CI saw "bind: address already in use" exactly so). Ports below that range are
// only ever given to whoever names them, so the pick here comes from there.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lowest is the bottom of the range picked from: above the ports well-known
// services and their usual alternates live on.
const lowest = 20000

// attempts bounds the random tries before giving up.
const attempts = 200

// Reservation holds a port bound until Release, so several picks in a row are
// distinct and nothing else can bind one of them meanwhile.
type Reservation struct {
	Host    string
	Port    int
	closers []func() error
}

// Addr is host:port.
func (r *Reservation) Addr() string { return net.JoinHostPort(r.Host, strconv.Itoa(r.Port)) }

// Release unbinds the port so its owner can bind it.
func (r *Reservation) Release() {
	for _, c := range r.closers {
		_ = c()
	}
	r.closers = nil
}

// Reserve binds a free TCP port on host, and the same UDP port when udp is true,
// chosen at random below the ephemeral range, and holds it until Release.
func Reserve(host string, udp bool) (*Reservation, error) {
	lo, hi := pickRange()
	if hi <= lo {
		// No quiet range on this machine: take what the kernel gives.
		return bind(host, 0, udp)
	}
	var last error
	for range attempts {
		port := lo + rand.IntN(hi-lo)
		r, err := bind(host, port, udp)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("reserve a port on %s: %w", host, err)
		}
		last = err
	}
	return nil, fmt.Errorf("reserve a port on %s: none free in %d-%d after %d tries: %w", host, lo, hi-1, attempts, last)
}

// TCP returns host:port for a TCP port on host that was free when picked and is
// outside the range the kernel hands out on its own.
func TCP(host string) (string, error) { return pick(host, false) }

// TCPAndUDP is TCP for a port free for both protocols (a DNS server binds both).
func TCPAndUDP(host string) (string, error) { return pick(host, true) }

func pick(host string, udp bool) (string, error) {
	r, err := Reserve(host, udp)
	if err != nil {
		return "", err
	}
	r.Release()
	return r.Addr(), nil
}

func bind(host string, port int, udp bool) (*Reservation, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	r := &Reservation{Host: host, Port: ln.Addr().(*net.TCPAddr).Port, closers: []func() error{ln.Close}}
	if udp {
		pc, err := net.ListenPacket("udp", r.Addr())
		if err != nil {
			r.Release()
			return nil, err
		}
		r.closers = append(r.closers, pc.Close)
	}
	return r, nil
}

// pickRange is [lowest, start of the ephemeral range), read from Linux's
// ip_local_port_range; elsewhere, below IANA's dynamic range.
func pickRange() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				hi = n
			}
		}
	}
	if hi-lowest < 1000 {
		// The ephemeral range reaches low: use what lies above the well-known ports.
		return 1024, hi
	}
	return lowest, hi
}
