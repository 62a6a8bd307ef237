// proxy.pac: which proxy a browser (or the OS) uses for each request.
// Serve it from an internal web server as application/x-ns-proxy-autoconfig, e.g.
// http://wpad.college.internal/proxy.pac (and as /wpad.dat for WPAD), and point managed devices
// at it (docs/deployment.md).  Edit the two marked lines for your site.
//
// Two gateways with failover: browsers try the first gateway, and when it does not answer
// they use the second (Chromium then avoids the failed one for a few minutes).
// Both gateways must present the same CA (copy the first gateway's confdir CA files to the
// second before its first start), so devices trust either.  Tested with Chromium in
// tests/e2e/test_two_gateways.py.  Deliberately no "DIRECT" at the end: when no gateway
// answers, browsing stops instead of going out unfiltered.

var GATEWAYS = "PROXY webpolicy1.college.internal:8080; PROXY webpolicy2.college.internal:8080";
var INTERNAL_DOMAIN = ".college.internal";
var INTERNAL_ADDRESS = /^(10|127)(\.\d{1,3}){3}$|^192\.168(\.\d{1,3}){2}$/;

function FindProxyForURL(url, host) {
  // Names and addresses inside the centre go direct (they never leave the site).  Match
  // addresses exactly: shExpMatch(host, "10.*") would also send "10.anything.com" direct.
  // No isInNet()/dnsResolve(): they make the browser resolve every host before each request.
  if (isPlainHostName(host) || dnsDomainIs(host, INTERNAL_DOMAIN) ||
      host === "localhost" || INTERNAL_ADDRESS.test(host)) {
    return "DIRECT";
  }
  return GATEWAYS;
}
