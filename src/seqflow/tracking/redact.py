"""Credentials out of what seqflow logs to MLflow (params, tags, the logged ``config.yaml``).

A tracking store is read by everyone with access to the experiment, so values are scrubbed
before they leave the process. What is replaced by :data:`MARK` (``[redacted]``):

* the password of a URI's user-info (``s3://user:secret@host/b`` → ``s3://user:[redacted]@host/b``),
  and a user-info without a password unless it looks like a login name (``git@``, ``ubuntu@``):
  ``https://ghp_abc…@github.com`` → ``https://[redacted]@github.com``;
* query parameters that carry secrets (``token``, ``access_token``, ``api_key``, ``key``,
  ``password``, ``sig``, ``signature``, ``X-Amz-Signature``, ``X-Amz-Credential``,
  ``X-Amz-Security-Token``, ``X-Goog-Signature``, ``AWSAccessKeyId``, … see :data:`SECRET_QUERY_PARAMS`);
* ``name=value`` / ``name: value`` pairs in free text whose name is a secret (``password=…``,
  ``aws_secret_access_key=…``, JSON's ``"password": "…"``), ``Bearer …`` headers;
* AWS access key ids (``AKIA…``/``ASIA…``) and well-known token formats (GitHub ``ghp_…`` /
  ``github_pat_…``, GitLab ``glpat-…``, Hugging Face ``hf_…``, Slack ``xox?-…``) anywhere;
* the whole value of a config key / param / tag whose last name part names a secret
  (``password``, ``token``, ``secret``, ``api_key``, ``access_key``, ``private_key``, … see
  :func:`is_secret_key`), e.g. ``storage.aws_secret_access_key``.

Everything else is left byte-identical (a value with nothing to hide comes back unchanged), and
redaction is idempotent. It is a safety net, not a vault: secrets belong in the environment
(``AWS_*``, ``MLFLOW_TRACKING_PASSWORD``, ``RAY_AUTH_TOKEN``), never in the config.

>>> redact("s3://AKIAIOSFODNN7EXAMPLE:wJalr@minio:9000/bucket?X-Amz-Signature=abc&part=1")
's3://[redacted]:[redacted]@minio:9000/bucket?X-Amz-Signature=[redacted]&part=1'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MARK = "[redacted]"

SECRET_QUERY_PARAMS = (
    "token", "access_token", "refresh_token", "id_token", "auth", "auth_token", "authorization",
    "api_key", "apikey", "api-key", "key", "password", "passwd", "pass", "pwd", "secret", "client_secret",
    "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "awsaccesskeyid", "sas", "sv_sig", "private_token", "session_token",
)
# last part of a dotted/underscored key that names a secret: whole value redacted
_SECRET_KEY_WORDS = ("password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "access_key",
                     "secret_key", "private_key", "credential", "credentials", "auth_token", "session_token",
                     "secret_access_key", "access_key_id", "client_secret", "sas_token", "signature")
_SECRET_KEY = re.compile(r"(?:^|[._\-/])(?:" + "|".join(re.escape(w) for w in _SECRET_KEY_WORDS) + r")$",
                         re.IGNORECASE)
_LOGIN_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,15}")   # git@, ubuntu@, ec2-user@: not secrets

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/@?#:]*)(?::(?P<pw>[^\s/@?#]*))?@")
_QUERY = re.compile(r"(?P<lead>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_QUERY_PARAMS) + r")=)"
                    r"(?P<value>[^&#\s\"',;]*)", re.IGNORECASE)
_PAIR = re.compile(r"(?P<lead>\b(?:aws_secret_access_key|aws_access_key_id|aws_session_token|password|passwd|"
                   r"secret|client_secret|api[_-]?key|access[_-]?token|auth[_-]?token|token)[\"']?\s*[=:]\s*[\"']?)"
                   r"(?P<value>(?!\[redacted\])[^\s,;&'\"}\]]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<lead>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})", re.IGNORECASE)
_TOKENS = re.compile(
    r"\b(?:(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|hf_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9\-]{10,})\b")


def _userinfo(m: re.Match) -> str:
    user, pw = m.group("user"), m.group("pw")
    if pw is not None:
        user = user if _LOGIN_NAME.fullmatch(user) and not _TOKENS.fullmatch(user) else MARK
        return f"{m.group('scheme')}{user}:{MARK}@"
    if user == "" or (_LOGIN_NAME.fullmatch(user) and not _TOKENS.fullmatch(user)):
        return m.group(0)
    return f"{m.group('scheme')}{MARK}@"


def _keep_lead(m: re.Match) -> str:
    return m.group("lead") + MARK if m.group("value") else m.group(0)


def redact(text: str) -> str:
    """``text`` with every credential listed in the module doc replaced by ``[redacted]``.

    Args:
        text: any string (a URI, a JSON list of URIs, a command line, free text).
    Returns:
        The same string where nothing matched; never raises.
    """
    if not text:
        return text
    text = _USERINFO.sub(_userinfo, text)
    text = _QUERY.sub(_keep_lead, text)
    text = _PAIR.sub(_keep_lead, text)
    text = _BEARER.sub(_keep_lead, text)
    return _TOKENS.sub(MARK, text)


def is_secret_key(key: str) -> bool:
    """True when a config key / param / tag name names a secret by its last part
    (``storage.password``, ``s3.aws_secret_access_key``, ``hub_token``, Lightning's ``hub/token``);
    ``tokenizer.*`` and ``max_tokens`` are not secrets."""
    return bool(_SECRET_KEY.search(str(key)))


def redact_value(key: str, value: Any) -> str:
    """``str(value)`` as it may be logged under ``key``: :data:`MARK` for a secret-named key with a
    non-empty value, else :func:`redact` of the text."""
    text = "" if value is None else str(value)
    if is_secret_key(key) and text not in ("", "None", "null", MARK):
        return MARK
    return redact(text) if value is not None else "None"


def redact_mapping(items: Mapping[str, Any]) -> dict[str, str]:
    """Params or tags ``{name: value}`` → ``{name: redact_value(name, value)}`` (string values)."""
    return {str(k): redact_value(str(k), v) for k, v in items.items()}


def redact_config(node: Any, key: str = "") -> Any:
    """A plain config tree (dicts, lists, scalars, as from ``OmegaConf.to_container``) with secret
    keys' values replaced by :data:`MARK` and every string passed through :func:`redact`; the
    structure and the non-string scalars are kept."""
    if isinstance(node, Mapping):
        return {k: redact_config(v, str(k)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [redact_config(v, key) for v in node]
    if key and is_secret_key(key) and node not in (None, ""):
        return MARK
    return redact(node) if isinstance(node, str) else node
