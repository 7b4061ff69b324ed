#!/usr/bin/env python3
"""An external DCI peerlet in Python: answers each request with its payload's text upper-cased.

Framing on stdin and stdout: a 4-byte big-endian length, then that many bytes of one envelope's
XML (urn:dci:envelope:1). The agent overwrites the sender fields of what we write, so only the
target, the correlation and the payload matter.
"""
import struct
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

NS = "urn:dci:envelope:1"


def read_frame(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = struct.unpack(">I", head)
    body = stream.read(length)
    return body if len(body) == length else None


def write_frame(stream, text):
    data = text.encode("utf-8")
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def answer(request):
    sender = request.find(f"{{{NS}}}sender")
    payload = request.find(f"{{{NS}}}payload")
    text = "".join(payload.itertext()) if payload is not None else ""
    instance = sender.get("instance")
    target_instance = f" instance={quoteattr(instance)}" if instance else ""
    return (
        f'<envelope xmlns="{NS}" id="{uuid.uuid4()}" kind="reply" ttl="9" '
        f'created="{int(time.time() * 1000)}" correlation="{request.get("id")}">'
        f'<sender node="self" app="upper"/>'
        f'<target app={quoteattr(sender.get("app"))}{target_instance}>'
        f"<node>{escape(sender.get('node'))}</node></target>"
        f'<payload><upper xmlns="urn:dci:upper:1">{escape(text.upper())}</upper></payload>'
        f"</envelope>"
    )


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        body = read_frame(stdin)
        if body is None:
            return
        try:
            request = ET.fromstring(body)
        except ET.ParseError as e:
            print(f"upper: skipped a bad envelope: {e}", file=sys.stderr)
            continue
        if request.get("kind") == "request":
            write_frame(stdout, answer(request))


if __name__ == "__main__":
    main()
