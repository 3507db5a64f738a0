"""A real HTTP endpoint on 127.0.0.1 that stands in for a restriction hook receiver."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Endpoint"]


class Endpoint:
    """Records every POST; answers each with the next status of ``statuses`` (then 200), and
    with 422 any request holding a flag whose id is in ``refuse_ids``."""

    def __init__(self, statuses=(), refuse_ids=()) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.accepted: list[bytes] = []  # bodies answered with a success
        self.statuses = list(statuses)
        self.refuse_ids = set(refuse_ids)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.requests.append((dict(self.headers), body))
                status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                if {f["flag_id"] for f in json.loads(body)["flags"]} & endpoint.refuse_ids:
                    status = 422
                if status < 300:
                    endpoint.accepted.append(body)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/restrict"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def flags(self) -> list[dict]:
        """Every flag POSTed, refused or not."""
        return [flag for _, body in self.requests for flag in json.loads(body)["flags"]]

    def taken(self) -> list[dict]:
        """The flags of the requests it accepted."""
        return [flag for body in self.accepted for flag in json.loads(body)["flags"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
