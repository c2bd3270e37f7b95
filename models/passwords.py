"""The console's password policy, one for `flask --app wsgi agent create` and the admin pages.

Following NIST SP 800-63B (§3.1.1.2, "Password Verifiers"): a length floor, no composition rules
(no "one digit, one capital"), no forced periodic change, and a check of each new password against
what attackers try first: common and breached passwords, dictionary words, repetitive or
sequential characters, and words of the context (the username, the display name, the service).

- At least `MIN_LENGTH` = 15 characters. SP 800-63B rev. 4 (2025) requires at least 15 of a
  password used alone and at least 8 of one used with a second factor. Admins always have a
  one-time code (`console.two_factor: admins`), but agents sign in with the password alone unless
  `console.two_factor` is `all`, so 15 for every account: one rule to tell the staff, and a
  passphrase of three or four words reaches it easily (12, say, would meet rev. 4 only with
  `two_factor: all`). At most `MAX_LENGTH` = 128 (800-63B: allow at least 64). Nothing is
  truncated: scrypt hashes it all.
- Not the username, nor containing it (case-insensitive).
- Not a common password: checked with zxcvbn (the Python port of Dropbox's estimator, pinned in
  requirements.txt, MIT licence). Its lists hold the 30,000 most common passwords of Xato's
  10-million-password corpus, English words, names and surnames, and it finds keyboard runs
  (`qwertyuiop`), repeats, sequences, dates and l33t spellings built from them — so `Password1234`
  is refused although no list holds it. A password is refused when zxcvbn estimates fewer than
  10^10 guesses (its score below 4, "strong protection from an offline slow-hash attack"): three
  words it knows glued together always count at least 10^8, so score 3 would let
  `Password1234567!` and `iloveqingdaobeer` through. The service's own words (`CONTEXT`: the
  city, 12333, 社保 in pinyin, …), the username and the display name count as dictionary words too.
  Limit: zxcvbn knows no pinyin beyond CONTEXT, so a name and a birth date in pinyin
  (`zhangwei19850312`) passes; the login limit is what stands against guessing those online.

Each problem is a `PasswordProblem` code; the console says it in Chinese, the CLI in English.
"""
from __future__ import annotations

import secrets
import threading
from enum import StrEnum

MIN_LENGTH = 15
MAX_LENGTH = 128
MIN_SCORE = 4  # zxcvbn's score: 4 is at least 10^10 guesses
ZXCVBN_LENGTH = 72  # zxcvbn refuses longer input; the first 72 characters are what it judges
# Words anyone guessing a hotline agent's password tries first.
CONTEXT = ("qingdao", "12333", "12345", "shebao", "shebaoka", "renshe", "rensheju", "hotline", "zuoxi",
           "kefu", "woaini", "1314", "520", "admin", "agent", "password", "mima")
# Temporary passwords: Crockford's base32 without look-alikes (no i, l, o, u), 16 characters in
# groups of four (80 random bits), e.g. `7kq2-m9x4-...`.
TEMPORARY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
TEMPORARY_LENGTH = 16

_zxcvbn = threading.Lock()  # zxcvbn keeps the user inputs of a check in a module-level dictionary


class PasswordProblem(StrEnum):
    """Why a new password is refused."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    HAS_USERNAME = "has_username"
    COMMON = "common"


def password_problem(password: str, *, username: str, display_name: str = "") -> PasswordProblem | None:
    """Return why the password may not be set for the account, or None when it may."""
    if len(password) < MIN_LENGTH:
        return PasswordProblem.TOO_SHORT
    if len(password) > MAX_LENGTH:
        return PasswordProblem.TOO_LONG
    if username and username.casefold() in password.casefold():
        return PasswordProblem.HAS_USERNAME
    inputs = [username, display_name, *username.replace("_", ".").replace("-", ".").split("."), *CONTEXT]
    # Imported on first use: its word lists are ~12 MB of every worker's memory, and only a password
    # being set needs them (a webhook never does).
    from zxcvbn import zxcvbn  # type: ignore[import-untyped]  # zxcvbn ships no type information

    with _zxcvbn:
        score = int(zxcvbn(password[:ZXCVBN_LENGTH], user_inputs=[w for w in inputs if w])["score"])
    return PasswordProblem.COMMON if score < MIN_SCORE else None


def temporary_password(username: str) -> str:
    """Return a new random password for an admin to hand over (`xxxx-xxxx-xxxx-xxxx`); it passes the policy."""
    while True:
        raw = "".join(secrets.choice(TEMPORARY_ALPHABET) for _ in range(TEMPORARY_LENGTH))
        password = "-".join(raw[i:i + 4] for i in range(0, TEMPORARY_LENGTH, 4))
        if password_problem(password, username=username) is None:
            return password
