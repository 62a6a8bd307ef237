#!/usr/bin/env bash
# Debian packages the end-to-end tests and benchmarks use; installs only what is missing.
set -euo pipefail
need=()
command -v curl >/dev/null || need+=(curl)
command -v chromium >/dev/null || need+=(chromium fonts-liberation)
command -v promtool >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
command -v unshare >/dev/null || need+=(util-linux)
command -v certutil >/dev/null || need+=(libnss3-tools)   # Chromium's CA store for the block-page test
command -v chromedriver >/dev/null || need+=(chromium-driver)  # Selenium drives Chromium in tests/e2e/test_console.py
# Network namespaces and the nftables redirect of tests/e2e/test_transparent.py (in /usr/sbin,
# which a non-root PATH may lack).
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v systemd-analyze >/dev/null || need+=(systemd)  # checks docs/webpolicy.service
[ -x /usr/sbin/slapd ] || need+=(slapd)          # tests/e2e/test_directory.py runs a real OpenLDAP
command -v ldapsearch >/dev/null || need+=(ldap-utils)
# Single sign-on: python-gssapi builds against MIT krb5's headers; tests/e2e/test_kerberos.py
# runs a real KDC (krb5kdc, kdb5_util, kadmin.local) and gets tickets with kinit.
command -v krb5-config >/dev/null || need+=(libkrb5-dev)
command -v gcc >/dev/null || need+=(gcc)
[ -x /usr/sbin/krb5kdc ] || need+=(krb5-kdc)
[ -x /usr/sbin/kadmin.local ] || need+=(krb5-admin-server)
command -v kinit >/dev/null || need+=(krb5-user)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root: apt-get install ${need[*]})" >&2
  exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
