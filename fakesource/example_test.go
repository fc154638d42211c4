package fakesource_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/splitcheck/splitcheck/fakesource"
)

func ExampleNewServer() {
	src := fakesource.NewServer() // listening on 127.0.0.1:<port> already
	defer src.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := src.Dial(ctx) // a go-smtp client, like httptest's Client()
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()
	msg := "From: a@source.example\r\nTo: bob@corp.example\r\nMessage-ID: <probe-1@test>\r\n\r\nhello\r\n"
	if err := c.SendMail("a@source.example", []string{"bob@corp.example"}, strings.NewReader(msg)); err != nil {
		fmt.Println("send:", err)
		return
	}

	m, err := src.WaitFor(ctx, fakesource.To("bob@corp.example"))
	if err != nil {
		fmt.Println("wait:", err)
		return
	}
	last := m.Replies[len(m.Replies)-1]
	fmt.Println(m.From, m.Rcpts[0].Addr, m.MessageID, last.Command, last.Code)
	// Output: a@source.example bob@corp.example <probe-1@test> DATA 250
}

func ExampleServer_faults() {
	src := fakesource.NewUnstartedServer()
	src.RcptErr = func(rcpt string) error { // set before Start; nil: accept everything
		if strings.HasSuffix(rcpt, "@legacy.example") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	src.Start()
	defer src.Close()

	c, err := src.Dial(context.Background())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()
	err = c.SendMail("a@source.example", []string{"gone@legacy.example"}, strings.NewReader("Subject: x\r\n\r\nx\r\n"))
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		fmt.Println(se.Code, se.EnhancedCode, se.Message)
	}

	// Nothing was accepted, and Quiet proves nothing turns up either.
	err = src.Quiet(context.Background(), 10*time.Millisecond, fakesource.To("gone@legacy.example"))
	fmt.Println(len(src.Messages()), err)
	// Output:
	// 550 [5 1 1] no such user
	// 0 <nil>
}
