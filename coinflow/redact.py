"""Credentials out of URLs and connection strings before they are printed, logged or returned.

Settings such as ``REDIS_URL`` and ``MLFLOW_TRACKING_URI`` may carry a password
(``redis://:PASSWORD@host``, ``http://user:PASSWORD@host``), and libraries put
those URLs into their error messages. `redact` masks, in any text:

- the password of a URL's userinfo (the user name stays, to say who connects);
  a userinfo without a colon is taken to be a token and masked whole;
- the value of secret-looking parameters (``password=``, ``token=``, ...) in
  query strings and ``key=value`` connection strings (Feast's Redis string).
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://user:password@ (the userinfo ends at the last @ before the path, query or fragment).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s@]*(?:@[^/?#\s@]*)*)@")
_SECRET_PARAMETER = re.compile(
    r"(?i)(?P<name>\b(?:password|passwd|pwd|pass|secret|token|access_token|refresh_token|id_token|api_key|apikey"
    r"|api-key|access_key|secret_key|client_secret|auth|authorization|signature|sig)=)(?P<value>[^&;,#\s'\"]+)"
)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def redact(text: object) -> str:
    """`text` (a URL, a message, an exception) as a string with every credential masked."""
    masked = _USERINFO.sub(_mask_userinfo, str(text))
    return _SECRET_PARAMETER.sub(lambda m: f"{m['name']}{MASK}", masked)


class RedactingFormatter(logging.Formatter):
    """A log formatter that masks credentials in the whole formatted record, traceback included.

    The project's own messages are redacted where they are made; this catches
    the URLs that libraries (MLflow, requests, Feast) put into theirs.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
