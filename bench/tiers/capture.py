"""A stand-in upstream that records what it is sent: answers every GET with 1024 bytes and
`Cache-Control: max-age=3600`, and appends one JSON line per request (method, path, the
header fields in the order received) to OUT_FILE. shield-cost.sh puts it where a child edge
expects its parent, to capture the request a child really sends.

    python3 capture.py PORT OUT_FILE
"""

import http.server
import json
import sys


class Capture(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "headers": list(self.headers.items())}) + "\n")
        body = b"x" * 1024
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Capture).serve_forever()
