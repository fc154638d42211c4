package stalwarttest

import (
	"fmt"
	"strings"
)

// exprVariables are the bare words Stalwart's expression compiler knows in MTA
// contexts (docs/ref/expression/variable/*). Anything else unquoted fails with
// "Invalid variable or constant". Note that "source" is a variable: an unquoted
// 'source' route compiles, and silently means MX at delivery time.
var exprVariables = map[string]bool{
	// queue recipient context (the route expression)
	"rcpt": true, "rcpt_domain": true, "recipients": true, "sender": true, "sender_domain": true,
	"priority": true, "retry_num": true, "notify_num": true, "expires_in": true, "last_status": true,
	"last_error": true, "queue_name": true, "queue_age": true, "received_from_ip": true,
	"received_via_port": true, "source": true, "size": true,
	// session contexts
	"remote_ip": true, "remote_port": true, "local_ip": true, "local_port": true, "listener": true,
	"authenticated_as": true, "helo_domain": true, "is_tls": true, "asn": true, "country": true,
	"protocol": true,
	// constants
	"true": true, "false": true,
}

// exprFunctions are known functions and their arity (-1: any).
var exprFunctions = map[string]int{
	"is_local_domain": 1, "is_local_address": 1, "is_empty": 1, "is_ip_addr": 1, "is_ipv4_addr": 1,
	"is_ipv6_addr": 1, "len": 1, "lower": 1, "upper": 1, "trim": 1, "count": 1, "sort": 2,
	"contains": 2, "starts_with": 2, "ends_with": 2, "matches": 2, "split": 2, "key_get": 2,
	"key_exists": 2, "dns_query": 2, "domain_part": 2, "strip_suffix": 2, "strip_prefix": 2,
	"eq_ignore_case": 2, "contains_ignore_case": 2, "is_var": 1,
}

type exprToken struct {
	kind string // str, num, ident, op
	text string
}

// compileExpr checks an expression the way Stalwart's tokenizer and parser would
// reject it: unknown bare words, unknown functions, wrong arity, unbalanced parentheses.
func compileExpr(src string) error {
	toks, err := tokenizeExpr(src)
	if err != nil {
		return err
	}
	if len(toks) == 0 {
		return exprErr("empty expression")
	}
	// Arity and bare words.
	type frame struct {
		fn   string
		args int
		any  bool // any token seen in the current argument
	}
	var stack []frame
	prevOperand := false
	for i, t := range toks {
		switch t.kind {
		case "ident":
			if i+1 < len(toks) && toks[i+1].text == "(" {
				if _, ok := exprFunctions[t.text]; !ok {
					return exprErr("Unknown function %q", t.text)
				}
				continue
			}
			if !exprVariables[t.text] {
				return exprErr("Invalid variable or constant %q", t.text)
			}
			if prevOperand {
				return exprErr("Unexpected token %q", t.text)
			}
			prevOperand = true
			if len(stack) > 0 {
				stack[len(stack)-1].any = true
			}
		case "str", "num":
			if prevOperand {
				return exprErr("Unexpected token %q", t.text)
			}
			prevOperand = true
			if len(stack) > 0 {
				stack[len(stack)-1].any = true
			}
		case "op":
			switch t.text {
			case "(":
				fn := ""
				if i > 0 && toks[i-1].kind == "ident" {
					fn = toks[i-1].text
				}
				if len(stack) > 0 {
					stack[len(stack)-1].any = true
				}
				stack = append(stack, frame{fn: fn})
				prevOperand = false
			case ")":
				if len(stack) == 0 {
					return exprErr("Unmatched ')'")
				}
				f := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if f.any {
					f.args++
				}
				if want, ok := exprFunctions[f.fn]; ok && f.fn != "" && want >= 0 && f.args != want {
					return exprErr("Function %q expects %d arguments, got %d", f.fn, want, f.args)
				}
				if f.fn == "" && !f.any {
					return exprErr("Empty parentheses")
				}
				prevOperand = true
			case ",":
				if len(stack) == 0 || stack[len(stack)-1].fn == "" {
					return exprErr("Unexpected ','")
				}
				stack[len(stack)-1].args++
				stack[len(stack)-1].any = false
				prevOperand = false
			case "!":
				prevOperand = false
			default:
				if !prevOperand {
					return exprErr("Unexpected operator %q", t.text)
				}
				prevOperand = false
			}
		}
	}
	if len(stack) > 0 {
		return exprErr("Unmatched '('")
	}
	if !prevOperand {
		return exprErr("Expression ends with an operator")
	}
	return nil
}

func tokenizeExpr(src string) ([]exprToken, error) {
	var toks []exprToken
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(src) && src[j] != c {
				if src[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(src) {
				return nil, exprErr("Unterminated string")
			}
			toks = append(toks, exprToken{"str", src[i : j+1]})
			i = j + 1
		case c >= '0' && c <= '9':
			j := i
			for j < len(src) && (isIdentByte(src[j]) || src[j] == '.') {
				j++
			}
			toks = append(toks, exprToken{"num", src[i:j]})
			i = j
		case isIdentByte(c):
			j := i
			for j < len(src) && isIdentByte(src[j]) {
				j++
			}
			toks = append(toks, exprToken{"ident", src[i:j]})
			i = j
		default:
			op := ""
			for _, o := range []string{"==", "!=", "<=", ">=", "&&", "||", "=~", "<", ">", "!", "+", "-", "*", "/", "(", ")", ",", "[", "]"} {
				if strings.HasPrefix(src[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, exprErr("Invalid character %q", c)
			}
			toks = append(toks, exprToken{"op", op})
			i += len(op)
		}
	}
	return toks, nil
}

func isIdentByte(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// exprError carries the compiler's message as Stalwart words it (capitalised).
type exprError struct{ msg string }

func (e *exprError) Error() string { return e.msg }

func exprErr(format string, args ...any) error {
	return &exprError{fmt.Sprintf(format, args...)}
}
