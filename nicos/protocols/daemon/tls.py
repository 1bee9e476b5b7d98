"""TLS pieces shared by the daemon and our clients (stdlib ``ssl`` only).

TLS is an extension of this project: upstream NICOS clients and daemons speak the
protocol over plain TCP only. When it is on, both connections of a client (control
and event) are TLS connections; what travels inside them is unchanged.
"""

from __future__ import annotations

import socket
import ssl

# TLS 1.0 and 1.1 are deprecated (RFC 8996); ciphers stay at the ssl module's defaults.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

# The first byte of every TLS connection: the record type "handshake". A plain client
# opens with its 16-byte id instead, which a TLS daemon uses to refuse it clearly.
HANDSHAKE_RECORD_TYPE = 0x16


class TLSSocket(ssl.SSLSocket):
    """An SSLSocket whose ``shutdown`` never falls back to plain text.

    ``ssl.SSLSocket.shutdown`` forgets the TLS state before it shuts the descriptor
    down, so a second thread sending at that moment would put its data on the wire
    unencrypted. Both sides use ``shutdown`` from other threads to wake a blocked
    reader, so here it only shuts the descriptor down; reads then see EOF and writes
    fail, both still through TLS.
    """

    def shutdown(self, how: int) -> None:
        socket.socket.shutdown(self, how)


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """Apply the settings every context of this project uses; returns ``context``."""
    context.minimum_version = MINIMUM_VERSION
    context.sslsocket_class = TLSSocket
    return context


def looks_like_tls(first_byte: bytes) -> bool:
    """Whether the first byte a peer sent can open a TLS connection."""
    return first_byte[:1] == bytes([HANDSHAKE_RECORD_TYPE])


__all__ = ['HANDSHAKE_RECORD_TYPE', 'MINIMUM_VERSION', 'TLSSocket', 'harden',
           'looks_like_tls']
