package reftarget

import (
	"errors"
	"strings"
	"testing"
)

func TestAvailableNamesWhatIsMissing(t *testing.T) {
	lmtp := requirement{"file", "/usr/lib/dovecot/lmtp", "dovecot-lmtpd"}
	pf := requirement{"user", "postfix", "postfix"}
	absent := func(missing ...requirement) func(requirement) error {
		return func(r requirement) error {
			for _, m := range missing {
				if m == r {
					return errors.New("not found")
				}
			}
			return nil
		}
	}
	for _, tt := range []struct {
		name     string
		uid      int
		check    func(requirement) error
		want     []string
		wantNone []string
	}{
		{"all present as root", 0, absent(), nil, nil},
		{"not root", 1000, absent(), []string{"root privileges (running as uid 1000)"}, []string{"apt-get"}},
		{"lmtpd missing", 0, absent(lmtp), []string{"file /usr/lib/dovecot/lmtp (apt package dovecot-lmtpd)", "apt-get install -y --no-install-recommends " + AptPackages}, []string{"root", "postfix (apt"}},
		{"user missing", 0, absent(pf), []string{"user postfix (apt package postfix)"}, []string{"/usr/lib/dovecot/lmtp"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := available(tt.uid, []requirement{lmtp, pf}, tt.check)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("available() = %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("available() = %v; want ErrUnavailable", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("available() = %q; want it to contain %q", err, w)
				}
			}
			for _, w := range tt.wantNone {
				if strings.Contains(err.Error(), w) {
					t.Errorf("available() = %q; want it not to contain %q", err, w)
				}
			}
		})
	}
}
