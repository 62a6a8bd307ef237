"""Who a client is, beyond its address: proxy logins checked against a directory (LDAP)."""
