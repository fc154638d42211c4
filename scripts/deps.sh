#!/usr/bin/env bash
# Installs (as root) or checks what the tests need: Debian's postfix, dovecot, haproxy
# and friends for the reference target and the benchmarks, Go modules, staticcheck.
# Exits non-zero with a message naming what is missing when it cannot be had.
#
# SPLITCHECK_DEPS=always (set by .ci/run) installs everything even when it is present:
# CI then walks the same path a new machine does, so a package or tool missing from
# this list fails CI instead of hiding behind what an earlier session installed.
set -euo pipefail

PKGS=(postfix dovecot-imapd dovecot-lmtpd ssl-cert haproxy swaks libnet-ssleay-perl iproute2 procps)
STATICCHECK_VERSION=v0.8.2

ALWAYS=0
[ "${SPLITCHECK_DEPS:-}" = always ] && ALWAYS=1

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "$ALWAYS" = 1 ] && [ "$(id -u)" -eq 0 ]; then
	missing=("${PKGS[@]}")
fi

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing Debian packages: ${missing[*]}" >&2
		echo "deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}" >&2
	# Preseed postfix so its install asks nothing and sets up no system instance that
	# relays anywhere; the reference target runs its own instances from scratch folders.
	debconf-set-selections <<PRESEED
postfix postfix/main_mailer_type select Local only
postfix postfix/mailname string example.org
postfix postfix/destinations string example.org, localhost
postfix postfix/mynetworks string 127.0.0.0/8 [::1]/128
postfix postfix/protocols select ipv4
PRESEED
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq -o Acquire::Retries=3 || {
		echo "deps: apt-get update failed" >&2
		exit 1
	}
	apt-get install -y -qq -o Acquire::Retries=3 --no-install-recommends "${missing[@]}" >/dev/null || {
		echo "deps: apt-get install ${missing[*]} failed" >&2
		exit 1
	}
fi

# The reference target binds loopback ports 25, 587 and 143 itself: stop the system-wide
# instances if a package install started them (on machines without policy-rc.d).
if [ "$(id -u)" -eq 0 ]; then
	postfix -c /etc/postfix status >/dev/null 2>&1 && postfix -c /etc/postfix stop >/dev/null 2>&1 || true
	pgrep -x dovecot >/dev/null 2>&1 && [ -f /run/dovecot/master.pid ] && doveadm stop >/dev/null 2>&1 || true
fi

go mod download
GOBIN="$(go env GOPATH)/bin"
if [ "$ALWAYS" = 1 ] || ! "$GOBIN/staticcheck" -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	echo "deps: installing staticcheck $STATICCHECK_VERSION" >&2
	go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
echo "deps: ok" >&2
