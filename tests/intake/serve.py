"""A local stand-in for the places intake reads, for tests/integration/intake.rs.

    python3 serve.py DIR PORT

GET /NAME answers DIR/NAME (a list, a MISP feed's manifest.json and event files); when
DIR/NAME.status exists, it answers with that HTTP status instead (a source that fails).
POST /attributes/restSearch answers as a MISP instance's REST API does: 403 unless the
Authorization header is DIR/key, else DIR/restsearch.json, and the request body is kept in
DIR/last-request.json so the test can check the filters sent. Every file is read again at each
request, so the test changes what the source says by writing files.
"""

import http.server
import os
import sys

ROOT, PORT = sys.argv[1], int(sys.argv[2])


def read(name):
    path = os.path.join(ROOT, name)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body=b"", kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        name = self.path.lstrip("/").split("?")[0]
        if "/" in name or name.startswith("."):
            return self.answer(404)
        status = read(name + ".status")
        if status is not None:
            return self.answer(int(status.strip() or b"500"), b"failing on purpose")
        body = read(name)
        if body is None:
            return self.answer(404, b"no such file")
        self.answer(200, body, "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/attributes/restSearch":
            return self.answer(404)
        key = (read("key") or b"").strip().decode()
        if not key or self.headers.get("Authorization") != key:
            return self.answer(403, b'{"message": "Authentication failed."}')
        with open(os.path.join(ROOT, "last-request.json"), "wb") as f:
            f.write(body)
        status = read("restsearch.json.status")
        if status is not None:
            return self.answer(int(status.strip() or b"500"), b'{"message": "failing"}')
        self.answer(200, read("restsearch.json") or b'{"response": {"Attribute": []}}')

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
