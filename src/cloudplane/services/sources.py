"""Which git sources an app may be built from, written once: https URLs on DNS names without credentials (their
addresses checked by services/outbound.py when a deployment is asked for and again when it clones), and, only when
the operator sets CLOUDPLANE_APPS_ALLOW_LOCAL_SOURCES, git:// and file:// URLs and absolute local paths."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from cloudplane.domain.errors import ValidationFailed
from cloudplane.services import outbound

# An https URL without credentials, query or fragment, on a DNS name or an IPv4 address.
HTTPS_URL = re.compile(
    r"^https://(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"|[0-9]{1,3}(?:\.[0-9]{1,3}){3})(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%+/-]*)?$"
)
# What the documents promise (an https URL on a DNS name): the request models' published pattern. Every URL it
# admits is accepted when saved; the others `SOURCE` admits depend on the operator's settings.
DOCUMENTED = re.compile(HTTPS_URL.pattern.replace(r"|[0-9]{1,3}(?:\.[0-9]{1,3}){3})", ")"))
# A git daemon's URL, a file URL or an absolute path: printable ASCII, no option-like or relative forms.
LOCAL_SOURCE = re.compile(
    r"^(?:git://[A-Za-z0-9.\[\]:-]+(?:/[A-Za-z0-9._~%+/-]*)?|file:///[A-Za-z0-9._~%+/-]*|/[A-Za-z0-9._~%+/-]*)$"
)
# What a github_repo may look like at all (the request models' pattern); `check_source` then applies the policy.
SOURCE = re.compile(f"{HTTPS_URL.pattern}|{LOCAL_SOURCE.pattern}")
LOCAL_SETTING = "CLOUDPLANE_APPS_ALLOW_LOCAL_SOURCES"


def is_local(url: str) -> bool:
    return bool(LOCAL_SOURCE.fullmatch(url))


def check_source(url: str, *, allow_local: bool, allow_private: bool = False, field: str = "github_repo") -> str:
    """`url` if an app may be built from it here; ValidationFailed naming `field` and what to change otherwise. An
    address as the host must be public unless `allow_private` (a name is resolved and checked when it is fetched)."""
    if HTTPS_URL.fullmatch(url):
        host = urlsplit(url).hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return url
        if not allow_private and not outbound.is_public(address):
            raise ValidationFailed(
                f"{field}: {address}, which is not a public address; builds fetch from public addresses only",
                field=field,
            )
        return url
    if is_local(url):
        if allow_local:
            return url
        raise ValidationFailed(
            f"{field}: git://, file:// URLs and local paths are allowed only when the operator sets {LOCAL_SETTING}; "
            "give an https URL",
            field=field,
        )
    raise ValidationFailed(
        f"{field} must be an https URL of a git repository on a DNS name, without credentials (user:token@)",
        field=field,
    )
