"""The recordings a call-back request may link to: Twilio's, over https, and nothing else.

A `<Record>`'s action carries the RecordingUrl Twilio made. Stored, it becomes a link in the
agents' console, so only a URL of that one shape is kept and linked: https, on Twilio's REST API
host (api.twilio.com, or its regional and edge forms api.<region>.twilio.com and
api.<edge>.<region>.twilio.com), the recording's own path under the account, no port, no user,
no query or fragment. A `javascript:` or `data:` URL, another host, http, or a look-alike never is.
"""
from __future__ import annotations

import re

# Host: api.twilio.com, api.ie1.twilio.com, api.dublin.ie1.twilio.com (labels: lower-case letters,
# digits and inner hyphens). Path: /2010-04-01/Accounts/AC<32 hex>/Recordings/RE<32 hex>[.mp3|.wav].
RECORDING_URL = re.compile(
    r"https://api(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?){0,2}\.twilio\.com"
    r"/2010-04-01/Accounts/AC[0-9a-f]{32}/Recordings/RE[0-9a-f]{32}(?:\.mp3|\.wav)?",
    re.ASCII,
)


def twilio_recording(url: str | None) -> str | None:
    """Return the URL when it is one of Twilio's recordings (see the module), else None.

    A URL that passes is at most 190 characters: it fits callback_requests.recording_url."""
    if not url or not RECORDING_URL.fullmatch(url):
        return None
    return url
