#!/usr/bin/env python3
"""An HTTP upstream that answers every GET with the X-Forwarded-For it got
("-" if none): what the proxy wrote, for lab_ipv6 and lab_proxy_protocol.

Usage: xff_upstream.py IP PORT
"""
import http.server
import sys


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        body = (self.headers.get('X-Forwarded-For') or '-').encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
