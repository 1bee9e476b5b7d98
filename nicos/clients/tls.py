"""TLS contexts for our clients (stdlib ``ssl``).

TLS is an extension of this project, off by default: a daemon only speaks TLS when
its configuration names a certificate, and then only our clients can connect (upstream
NICOS clients cannot). See docs/configuration.md for the daemon side.

The daemon's certificate is verified, host name included, against the system's
trusted CAs, or against ``cafile`` alone when one is given (a lab CA, or the daemon's
self-signed certificate itself).
"""

from __future__ import annotations

import os
import ssl

from nicos.protocols.daemon.tls import harden

PathLike = str | os.PathLike[str]


class CertificateFileError(ValueError):
    """A CA, certificate or key file given to the client cannot be used."""


def client_context(cafile: PathLike | None = None, *, certfile: PathLike | None = None,
                   keyfile: PathLike | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client context for ``NicosClient.connect(..., tls=context)``.

    *cafile*: PEM file of the CA certificate(s) to trust instead of the system's.
    *certfile*/*keyfile*: a client certificate, for daemons that require one
    (*keyfile* may be omitted if *certfile* holds the key as well).
    *verify* False accepts any certificate from anyone: the connection is then
    encrypted but not authenticated, so a man in the middle goes unnoticed; only
    for tests.
    """
    if verify:
        try:
            # Loads only cafile when given, else the system's trusted CAs.
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as err:
            raise CertificateFileError(f'cannot use CA file {cafile}: '
                                       f'{_reason(err)}') from None
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    harden(context)
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as err:
            raise CertificateFileError(f'cannot use client certificate {certfile}'
                                       f'{f" with key {keyfile}" if keyfile else ""}: '
                                       f'{_reason(err)}') from None
    elif keyfile is not None:
        raise CertificateFileError('a client key file needs its certificate file')
    return context


def _reason(err: OSError) -> str:
    if isinstance(err, ssl.SSLError):
        return err.reason or str(err)
    return err.strerror or str(err)


__all__ = ['CertificateFileError', 'client_context']
