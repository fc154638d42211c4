package bulk

import (
	"bufio"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    reply
		wantErr bool
	}{
		{"250 2.1.5 Ok\r\n", reply{250, "2.1.5", "Ok"}, false},
		{"250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", reply{250, "", "mx.example.org\nPIPELINING\nSIZE 1000"}, false},
		{"452-4.5.3 Error: too many\r\n452 4.5.3 recipients\r\n", reply{452, "4.5.3", "Error: too many\nrecipients"}, false},
		{"554 5.7.1 <x@external.test>: Relay access denied\r\n", reply{554, "5.7.1", "<x@external.test>: Relay access denied"}, false},
		{"220\r\n", reply{220, "", ""}, false},
		{"250 4.5.3 class does not match\r\n", reply{250, "", "4.5.3 class does not match"}, false},
		{"25\r\n", reply{}, true},
		{"abc hello\r\n", reply{}, true},
		{"250-a\r\n251 b\r\n", reply{}, true},
		{"250-unterminated", reply{}, true},
		{"250 " + strings.Repeat("x", 3000) + "\r\n", reply{}, true},
	} {
		got, err := readReply(bufio.NewReaderSize(strings.NewReader(tt.in), 4096))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("readReply(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		r    reply
		want outcome
	}{
		{reply{250, "2.1.5", "Ok"}, outcomeOK},
		{reply{354, "", "End data with <CR><LF>.<CR><LF>"}, outcomeOK},
		{reply{554, "5.7.1", "<a@external.test>: Relay access denied"}, outcomeRejected},
		{reply{550, "5.1.1", "User unknown"}, outcomeRejected},
		// Per-transaction recipient limits: Postfix, go-smtp, the legacy 552.
		{reply{452, "4.5.3", "Error: too many recipients"}, outcomeTooMany},
		{reply{452, "4.5.3", "Maximum limit of 7 recipients reached"}, outcomeTooMany},
		{reply{452, "", "Too many recipients"}, outcomeTooMany},
		{reply{552, "5.5.3", "Too many recipients"}, outcomeTooMany},
		{reply{552, "", "too many recipients"}, outcomeTooMany},
		// Rate limits: Postfix anvil, Stalwart-like and generic wordings.
		{reply{421, "4.7.0", "mx.example.org Error: too many connections from 198.51.100.7"}, outcomeRateLimited},
		{reply{450, "4.7.1", "Error: too much mail from 198.51.100.7"}, outcomeRateLimited},
		{reply{452, "4.7.1", "Error: too many recipients from 198.51.100.7"}, outcomeRateLimited},
		{reply{452, "", "Too many recipients from 198.51.100.7"}, outcomeRateLimited},
		{reply{451, "4.7.1", "Rate limit exceeded, try again later"}, outcomeRateLimited},
		{reply{421, "", "Throttled"}, outcomeRateLimited},
		// Other temporary failures are retried but are not rate limits.
		{reply{451, "4.3.0", "Error: queue file write error"}, outcomeTemporary},
		{reply{450, "4.1.8", "Sender address rejected: Domain not found"}, outcomeTemporary},
		{reply{421, "4.3.2", "Service shutting down"}, outcomeTemporary},
		{reply{}, outcomeTemporary},
	} {
		if got := classify(tt.r); got != tt.want {
			t.Errorf("classify(%s) = %s; want %s", tt.r, got, tt.want)
		}
	}
}

func TestRcptMax(t *testing.T) {
	for _, tt := range []struct {
		limits string
		want   int
	}{
		{"RCPTMAX=50", 50},
		{"MAILMAX=10 RCPTMAX=20", 20},
		{"rcptmax=5", 5},
		{"RCPTMAX=x", 0},
		{"", 0},
	} {
		c := &client{ext: map[string]string{}}
		if tt.limits != "" {
			c.ext["LIMITS"] = tt.limits
		}
		if got := c.rcptMax(); got != tt.want {
			t.Errorf("rcptMax(LIMITS %s) = %d; want %d", tt.limits, got, tt.want)
		}
	}
}
