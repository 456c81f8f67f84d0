"""Fetch a URL over HTTP/3 with niquests (qh3), a QUIC stack independent of the edge's.

Prints: <http version> <body length> <body sha256>. Used by the edge's integration tests.
"""
import hashlib
import sys
from urllib.parse import urlsplit

import niquests


def main() -> None:
    url = sys.argv[1]
    parts = urlsplit(url)
    with niquests.Session() as session:
        # Go straight to HTTP/3 instead of learning it from Alt-Svc first.
        session.quic_cache_layer.add_domain(parts.hostname, parts.port or 443)
        # The edge's development certificate is self-signed; the test checks the bytes.
        response = session.get(url, verify=False, timeout=60)
        response.raise_for_status()
        body = response.content
    version = {30: "HTTP/3", 20: "HTTP/2", 11: "HTTP/1.1"}.get(response.http_version, "?")
    print(version, len(body), hashlib.sha256(body).hexdigest())


if __name__ == "__main__":
    main()
