package reftarget

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// exePrefixes are the executables an instance may run.
var exePrefixes = []string{"/usr/lib/postfix/", "/usr/sbin/post", "/usr/lib/dovecot/", dovecotBin, doveadmBin}

// InstanceProcesses lists the pids of live Postfix and Dovecot processes
// that belong to the instance in dir: their command line or environment
// names a path under dir (Postfix passes MAIL_CONFIG to its children), or
// their parent is such a process (Dovecot's children). Tests use it to prove
// Close leaves nothing behind.
func InstanceProcesses(dir string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	needle := []byte(strings.TrimSuffix(dir, "/") + "/")
	self := os.Getpid()
	type proc struct {
		ppid  int
		match bool
	}
	procs := map[int]*proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		base := "/proc/" + e.Name()
		exe, err := os.Readlink(base + "/exe")
		if err != nil || !hasAnyPrefix(exe, exePrefixes) {
			continue
		}
		stat, err := os.ReadFile(base + "/stat")
		if err != nil {
			continue
		}
		p := &proc{ppid: parsePPID(stat)}
		if state := parseState(stat); state == "Z" || state == "X" {
			continue
		}
		cmdline, _ := os.ReadFile(base + "/cmdline")
		environ, _ := os.ReadFile(base + "/environ")
		p.match = bytes.Contains(cmdline, needle) || bytes.Contains(environ, needle)
		procs[pid] = p
	}
	for changed := true; changed; {
		changed = false
		for _, p := range procs {
			if !p.match {
				if parent, ok := procs[p.ppid]; ok && parent.match {
					p.match, changed = true, true
				}
			}
		}
	}
	var pids []int
	for pid, p := range procs {
		if p.match {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// statFields returns the fields after "pid (comm)" in /proc/PID/stat.
func statFields(stat []byte) []string {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}

func parseState(stat []byte) string {
	if f := statFields(stat); len(f) > 0 {
		return f[0]
	}
	return ""
}

func parsePPID(stat []byte) int {
	f := statFields(stat)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// reap waits for the instance's processes to exit after the stop commands,
// then sends SIGTERM and finally SIGKILL to what is left, by pid.
func reap(ctx context.Context, dir string, log *slog.Logger) error {
	steps := []struct {
		sig   syscall.Signal
		grace time.Duration
	}{
		{0, 3 * time.Second},
		{syscall.SIGTERM, 2 * time.Second},
		{syscall.SIGKILL, 2 * time.Second},
	}
	var left []int
	for _, s := range steps {
		if s.sig != 0 {
			for _, pid := range left {
				log.Warn("process survived stop, signalling", "pid", pid, "signal", s.sig.String())
				_ = syscall.Kill(pid, s.sig)
			}
		}
		var err error
		left, err = waitGone(ctx, dir, s.grace)
		if err != nil {
			return err
		}
		log.Debug("reap", "signal", s.sig.String(), "left", left)
		if len(left) == 0 {
			return nil
		}
	}
	return fmt.Errorf("processes of %s still running: %v", dir, left)
}

// waitGone polls until no instance process is left, grace passes or ctx ends.
func waitGone(ctx context.Context, dir string, grace time.Duration) ([]int, error) {
	timer := time.NewTimer(grace)
	defer timer.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		pids, err := InstanceProcesses(dir)
		if err != nil || len(pids) == 0 {
			return pids, err
		}
		select {
		case <-ctx.Done():
			return pids, nil
		case <-timer.C:
			return pids, nil
		case <-tick.C:
		}
	}
}
