package freeport

import (
	"net"
	"testing"
)

func TestReserveIsOutsideTheEphemeralRange(t *testing.T) {
	lo, hi := pickRange()
	if hi <= lo {
		t.Skipf("this machine's ephemeral range leaves no quiet range (%d-%d)", lo, hi)
	}
	seen := map[int]bool{}
	var held []*Reservation
	defer func() {
		for _, r := range held {
			r.Release()
		}
	}()
	for range 20 {
		r, err := Reserve("127.0.0.1", true)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
		if r.Port < lo || r.Port >= hi {
			t.Errorf("port %d outside [%d, %d)", r.Port, lo, hi)
		}
		if seen[r.Port] {
			t.Errorf("port %d reserved twice while held", r.Port)
		}
		seen[r.Port] = true
		// Held: nobody else can bind it, for TCP nor UDP.
		if ln, err := net.Listen("tcp", r.Addr()); err == nil {
			ln.Close()
			t.Errorf("TCP %s bindable while reserved", r.Addr())
		}
		if pc, err := net.ListenPacket("udp", r.Addr()); err == nil {
			pc.Close()
			t.Errorf("UDP %s bindable while reserved", r.Addr())
		}
	}
}

func TestReleasedPortBinds(t *testing.T) {
	addr, err := TCPAndUDP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP bind %s after release: %v", addr, err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP bind %s after release: %v", addr, err)
	}
	pc.Close()
	// With the TCP side taken, a fresh pick must not return it.
	for range 50 {
		got, err := TCP("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if got == addr {
			t.Fatalf("TCP returned %s, which is bound", got)
		}
	}
}

func TestReserveBadHost(t *testing.T) {
	if _, err := Reserve("203.0.113.1", false); err == nil {
		t.Error("Reserve on an address this machine does not have succeeded")
	}
	if _, err := TCP("not a host"); err == nil {
		t.Error("TCP on a malformed host succeeded")
	}
}
