#!/usr/bin/python3
"""Independent re-implementation of keyward's vault format (format version 1).

Written ONLY from docs/SECURITY.md and the known-answer vectors in
tests/vectors/*.json -- no Rust source was read.  It recomputes every vector,
opens tests/vectors/vault.json with its password + Secret Key and with its
recovery code, and exercises the documented error paths of the vault reader.

Run from the repository root:

    /usr/bin/python3 tests/independent/keyward_independent.py

Dependencies: Python 3.11 standard library, Debian python3-cryptography
(AES-GCM, P-256) and python3-argon2 (argon2-cffi, raw Argon2id).

Where the document left something open, the guess made here is marked
"GUESS" with the finding number used in tests/independent/README.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import sys
import time
import traceback
import unicodedata
from dataclasses import dataclass, field

try:
    from argon2.low_level import Type as Argon2Type, hash_secret_raw
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write(
        "missing dependency (%s); install with\n"
        "  apt-get install -y --no-install-recommends python3-cryptography python3-argon2\n"
        "and run with /usr/bin/python3\n" % exc
    )
    sys.exit(2)


# ---------------------------------------------------------------------------
# Errors.  `cls` is the documented error class (or, where the document names
# none, the class this implementation chose -- see README findings).
# ---------------------------------------------------------------------------


class KeywardError(Exception):
    kind = "error"

    def __init__(self, cls: str, detail: str = ""):
        super().__init__(f"{self.kind}: {cls}" + (f" ({detail})" if detail else ""))
        self.cls = cls
        self.detail = detail


class SecretKeyError(KeywardError):
    """§3: always reported as 'this Secret Key has a typo: <class>'."""

    kind = "this Secret Key has a typo"


class PasswordError(KeywardError):
    kind = "password"


class RecoveryCodeError(KeywardError):
    kind = "recovery code"  # classes are NOT named by the document (finding F-RC1)


class VaultError(KeywardError):
    kind = "vault"


class UnlockError(KeywardError):
    kind = "unlock"


class ItemError(KeywardError):
    kind = "item"


# ---------------------------------------------------------------------------
# §1 Notation / §2 primitives
# ---------------------------------------------------------------------------


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869), implemented directly on hmac."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def xor(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b)
    return bytes(x ^ y for x, y in zip(a, b))


# Unicode White_Space property (PropList.txt; unchanged since Unicode 6.3).
# GUESS (F-WS): §3 and §8 say "Unicode white space"; taken to be the same
# White_Space property that §4 names explicitly (NOT Python's str.isspace(),
# which also matches U+001C..U+001F).
WHITE_SPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680]
    + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)
DASHES = frozenset([ord("-"), ord("_"), *range(0x2010, 0x2016), 0x2212])


def is_white_space(ch: str) -> bool:
    return ord(ch) in WHITE_SPACE


# ---------------------------------------------------------------------------
# §3 Secret Key
# ---------------------------------------------------------------------------

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTVWXYZ"
assert len(ALPHABET) == 31
SK_LEN = 35
SK_GROUPS = (2, 6, 6, 5, 5, 5, 6)


def _sk_value(ch: str) -> int:
    if ch == "1":
        return 1  # v('1') = 1 (the prefix digit)
    return ALPHABET.index(ch)


def secret_key_check(first34: str) -> str:
    """Check symbol over the 34 symbols before it (§3)."""
    assert len(first34) == 34
    total = 0
    for i, ch in enumerate(reversed(first34)):
        w = 2 if i % 2 == 0 else 1
        total = (total + w * _sk_value(ch)) % 31
    return ALPHABET[(31 - total) % 31]


@dataclass(frozen=True)
class SecretKey:
    account_id: str
    secret: str
    check: str

    @property
    def compact(self) -> str:
        return "K1" + self.account_id + self.secret + self.check

    @property
    def display(self) -> str:
        s, out, pos = self.compact, [], 0
        for g in SK_GROUPS:
            out.append(s[pos : pos + g])
            pos += g
        return "-".join(out)


def _strip_separators(text: str) -> str:
    return "".join(c for c in text if not is_white_space(c) and ord(c) not in DASHES)


def _ascii_upper(text: str) -> str:
    return "".join(c.upper() if "a" <= c <= "z" else c for c in text)


def parse_secret_key(text: str) -> SecretKey:
    s = _ascii_upper(_strip_separators(text))
    # 1. exactly 35 symbols.  GUESS (F-SK1): a "symbol" is a Unicode code point
    #    remaining after the removal step (non-ASCII characters count as one).
    if len(s) != SK_LEN:
        raise SecretKeyError("length")
    # 2. prefix
    if s[:2] != "K1":
        raise SecretKeyError("prefix")
    # 3. every other symbol in A; '1' only as the second
    if any(c not in ALPHABET for c in s[2:]):
        raise SecretKeyError("symbol")
    # 4. check
    if secret_key_check(s[:34]) != s[34]:
        raise SecretKeyError("check")
    return SecretKey(account_id=s[2:8], secret=s[8:34], check=s[34])


def k_s(sk: SecretKey) -> bytes:
    return hkdf(sk.secret.encode("ascii"), sk.account_id.encode("ascii"), b"keyward/v1 secret-key")


def is_account_id(s: str) -> bool:
    return len(s) == 6 and all(c in ALPHABET for c in s)


# ---------------------------------------------------------------------------
# §4 Master Password
# ---------------------------------------------------------------------------


def normalise_password(raw: str) -> bytes:
    start, end = 0, len(raw)
    while start < end and is_white_space(raw[start]):
        start += 1
    while end > start and is_white_space(raw[end - 1]):
        end -= 1
    trimmed = raw[start:end]  # trimming BEFORE NFKD, as documented
    out = unicodedata.normalize("NFKD", trimmed).encode("utf-8")
    if not out:
        raise PasswordError("empty")
    return out


def argon_salt(salt16: bytes, account_id: str) -> bytes:
    return hkdf(salt16, account_id.encode("ascii"), b"keyward/v1 argon2id-salt")


def check_kdf_params_on_load(m_kib: int, t: int, p: int) -> None:
    """§4 'loading refuses -- before allocating anything'."""
    if not 1 <= t <= 64:
        raise VaultError("malformed", f"t = {t} out of [1, 64]")
    if not 1 <= p <= 64:
        raise VaultError("malformed", f"p = {p} out of [1, 64]")
    if m_kib > 4194304:
        raise VaultError("malformed", f"m = {m_kib} KiB > 4 GiB")
    if m_kib < 8 * p:
        raise VaultError("malformed", f"m = {m_kib} KiB < 8*p")


def check_kdf_params_for_new_wrap(m_kib: int, t: int, p: int) -> None:
    check_kdf_params_on_load(m_kib, t, p)
    if m_kib < 19456 or t < 2:
        raise ValueError("new wraps need m >= 19456 KiB and t >= 2")


def k_m(password_normalised: bytes, salt16: bytes, account_id: str, m_kib: int, t: int, p: int) -> bytes:
    return hash_secret_raw(
        secret=password_normalised,
        salt=argon_salt(salt16, account_id),
        time_cost=t,
        memory_cost=m_kib,
        parallelism=p,
        hash_len=32,
        type=Argon2Type.ID,
        version=0x13,
    )


# ---------------------------------------------------------------------------
# §5 / §6 AUK, account-key derivations, wraps
# ---------------------------------------------------------------------------


def auk(km: bytes, ks: bytes) -> bytes:
    return xor(km, ks)


def item_key(account_key: bytes, account_id: str) -> bytes:
    return hkdf(account_key, account_id.encode("ascii"), b"keyward/v1 items")


def mac_key(account_key: bytes, account_id: str) -> bytes:
    return hkdf(account_key, account_id.encode("ascii"), b"keyward/v1 vault-mac")


PURPOSES = ("password", "recovery", "piv", "item", "organizer-key", "organizer", "grant", "ssh-key")


def wrap_aad(purpose: str, account_id: str, slot_id: str) -> bytes:
    assert purpose in PURPOSES
    return ("keyward/v1|" + purpose + "|" + account_id + "|" + slot_id).encode("ascii")


def seal(key: bytes, purpose: str, account_id: str, slot_id: str, nonce: bytes, plaintext: bytes) -> bytes:
    assert len(key) == 32 and len(nonce) == 12
    return AESGCM(key).encrypt(nonce, plaintext, wrap_aad(purpose, account_id, slot_id))


def open_wrap(key: bytes, purpose: str, account_id: str, slot_id: str, nonce: bytes, ct: bytes) -> bytes:
    """Raises cryptography InvalidTag on failure."""
    return AESGCM(key).decrypt(nonce, ct, wrap_aad(purpose, account_id, slot_id))


def password_slot_id(generation: int) -> str:
    return f"pw-{generation}"


def piv_slot_id(serial: int, slot: int) -> str:
    return f"{serial}-{slot:02x}"


# ---------------------------------------------------------------------------
# §7 Items
# ---------------------------------------------------------------------------

NAME_MAX, VALUE_MAX = 256, 61440


def _has_control(name: str) -> bool:
    # GUESS (F-IT1): "control characters" = Unicode general category Cc
    # (U+0000..U+001F, U+007F..U+009F).
    return any(unicodedata.category(c) == "Cc" for c in name)


def encode_item(name: str, value: bytes, created: int, modified: int) -> bytes:
    nb = name.encode("utf-8")
    if not 1 <= len(nb) <= NAME_MAX or _has_control(name):
        raise ItemError("name")
    if len(value) > VALUE_MAX:
        raise ItemError("value")
    return struct.pack(">H", len(nb)) + nb + struct.pack(">I", len(value)) + value + struct.pack(">QQ", created, modified)


@dataclass
class Item:
    item_id: bytes
    name: str
    value: bytes
    created: int
    modified: int


def decode_item(pt: bytes) -> tuple[str, bytes, int, int]:
    try:
        (nlen,) = struct.unpack_from(">H", pt, 0)
        if not 1 <= nlen <= NAME_MAX:
            raise ItemError("name")
        nb = pt[2 : 2 + nlen]
        if len(nb) != nlen:
            raise ItemError("truncated")
        name = nb.decode("utf-8")  # strict
        if _has_control(name):
            raise ItemError("name")
        off = 2 + nlen
        (vlen,) = struct.unpack_from(">I", pt, off)
        if vlen > VALUE_MAX:
            raise ItemError("value")
        off += 4
        value = pt[off : off + vlen]
        if len(value) != vlen:
            raise ItemError("truncated")
        off += vlen
        created, modified = struct.unpack_from(">QQ", pt, off)
        off += 16
    except (struct.error, UnicodeDecodeError) as exc:
        raise ItemError("malformed", str(exc)) from None
    if off != len(pt):
        raise ItemError("malformed", "trailing bytes in item plaintext")
    return name, bytes(value), created, modified


def item_slot_id(item_id: bytes) -> str:
    assert len(item_id) == 16
    return item_id.hex()


# ---------------------------------------------------------------------------
# §8 Recovery codes
# ---------------------------------------------------------------------------

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
assert len(CROCKFORD) == 32


def recovery_check_bits(code: bytes) -> int:
    return sha256(b"keyward/v1 recovery-check" + code)[0] >> 4


def recovery_display(code: bytes) -> str:
    assert len(code) == 32
    n = (int.from_bytes(code, "big") << 4) | recovery_check_bits(code)  # 260 bits
    syms = "".join(CROCKFORD[(n >> (5 * (51 - i))) & 31] for i in range(52))
    return "RC1-" + "-".join(syms[i : i + 4] for i in range(0, 52, 4))


_RC_ALIASES = {"O": "0", "o": "0", "I": "1", "i": "1", "L": "1", "l": "1"}


def parse_recovery_code(text: str) -> bytes:
    s = _strip_separators(text)
    s = "".join(_RC_ALIASES.get(c, c) for c in s)
    s = _ascii_upper(s)  # GUESS (F-RC2): ASCII-only upper-casing, as for Secret Keys
    if len(s) == 55 and s.startswith("RC1"):
        s = s[3:]
    # GUESS (F-RC1): the document names no error classes here; these are ours.
    if len(s) != 52:
        raise RecoveryCodeError("length")
    if any(c not in CROCKFORD for c in s):
        raise RecoveryCodeError("symbol")
    n = 0
    for c in s:
        n = (n << 5) | CROCKFORD.index(c)
    code = (n >> 4).to_bytes(32, "big")
    if (n & 0xF) != recovery_check_bits(code):
        raise RecoveryCodeError("check")
    return code


def recovery_code_id(code: bytes, account_id: str) -> bytes:
    return hkdf(code, account_id.encode("ascii"), b"keyward/v1 recovery-id", 8)


def recovery_wrap_key(code: bytes, account_id: str) -> bytes:
    return hkdf(code, account_id.encode("ascii"), b"keyward/v1 recovery-wrap")


# ---------------------------------------------------------------------------
# §9 PIV wrap key
# ---------------------------------------------------------------------------

CURVE = ec.SECP256R1()


def sec1c(pub: ec.EllipticCurvePublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def sec1_uncompressed(pub: ec.EllipticCurvePublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def load_sec1(data: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, data)


def piv_wrap_key_from_shared(shared: bytes, epk_c: bytes, card_pk_c: bytes) -> bytes:
    return hkdf(shared, epk_c + card_pk_c, b"keyward/v1 piv-p256")


def piv_wrap_host(e_scalar: int, card_pk: ec.EllipticCurvePublicKey) -> tuple[bytes, bytes, bytes]:
    """Host side: returns (epk compressed, shared x, wrap_key)."""
    e = ec.derive_private_key(e_scalar, CURVE)
    shared = e.exchange(ec.ECDH(), card_pk)  # x-coordinate, 32 bytes big-endian
    epk_c = sec1c(e.public_key())
    return epk_c, shared, piv_wrap_key_from_shared(shared, epk_c, sec1c(card_pk))


def piv_unwrap_card(card_priv: ec.EllipticCurvePrivateKey, epk_c: bytes) -> bytes:
    """Simulated card side (GENERAL AUTHENTICATE): returns the wrap key."""
    shared = card_priv.exchange(ec.ECDH(), load_sec1(epk_c))
    return piv_wrap_key_from_shared(shared, epk_c, sec1c(card_priv.public_key()))


# ---------------------------------------------------------------------------
# §17.1 SSH keys in the vault (record 0x09, purpose ssh-key)
# ---------------------------------------------------------------------------


def ssh_string(b: bytes) -> bytes:
    """RFC 4251 string: u32 length, then the bytes."""
    return struct.pack(">I", len(b)) + b


def ed25519_public(seed: bytes) -> bytes:
    k = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ssh_ed25519_blob(public: bytes) -> bytes:
    return ssh_string(b"ssh-ed25519") + ssh_string(public)


def ssh_ed25519_agent_private(seed: bytes) -> bytes:
    """§17.1: string "ssh-ed25519" ‖ string A ‖ string (seed ‖ A)."""
    a = ed25519_public(seed)
    return ssh_string(b"ssh-ed25519") + ssh_string(a) + ssh_string(seed + a)


def ssh_p256_blob(scalar: int) -> bytes:
    q = sec1_uncompressed(ec.derive_private_key(scalar, CURVE).public_key())
    return ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp256") + ssh_string(q)


def ssh_hop(user: str, hostname: str, keys: list) -> bytes:
    """§17.1: string user ‖ string hostname ‖ string "" then (string key ‖ u8 is-CA)*."""
    out = ssh_string(user.encode()) + ssh_string(hostname.encode()) + ssh_string(b"")
    for blob, is_ca in keys:
        out += ssh_string(blob) + bytes([1 if is_ca else 0])
    return out


def ssh_constraints(sk_provider: str | None, destinations: list) -> bytes:
    """§17.1: byte 255 ‖ string name ‖ string value, sk-provider first.
    `destinations`: [((user, host, keys), (user, host, keys))]."""
    out = b""
    if sk_provider is not None:
        out += b"\xff" + ssh_string(b"sk-provider@openssh.com") + ssh_string(sk_provider.encode())
    if destinations:
        value = b"".join(
            ssh_string(ssh_string(ssh_hop(*frm)) + ssh_string(ssh_hop(*to)) + ssh_string(b""))
            for frm, to in destinations
        )
        out += b"\xff" + ssh_string(b"restrict-destination-v00@openssh.com") + ssh_string(value)
    return out


SSH_APPROVALS = {"never": 0, "once-per-process": 1, "always": 2}
SSH_NAME_MAX, SSH_COMMENT_MAX = 256, 1024


class SshKeyError(KeywardError):
    kind = "SSH key record"


def encode_ssh_key_plaintext(location: int, approval: str, created: int, name: str, comment: str,
                             secret: bytes, constraints: bytes) -> bytes:
    nb, cb = name.encode("utf-8"), comment.encode("utf-8")
    if not 1 <= len(nb) <= SSH_NAME_MAX or _has_control(name):
        raise SshKeyError("name")
    if len(cb) > SSH_COMMENT_MAX:
        raise SshKeyError("comment")
    if location == 2 and len(secret) != 6:
        raise SshKeyError("card secret")
    return (bytes([1, location, SSH_APPROVALS[approval]]) + struct.pack(">Q", created)
            + struct.pack(">H", len(nb)) + nb + struct.pack(">H", len(cb)) + cb
            + struct.pack(">I", len(secret)) + secret + struct.pack(">I", len(constraints)) + constraints)


def card_secret(serial: int, slot: int, touch: int) -> bytes:
    return struct.pack(">IBB", serial, slot, touch)


def decode_ssh_key_plaintext(pt: bytes) -> dict:
    """The reader's checks of §17.1; raises SshKeyError("damaged")."""
    r = _Reader(pt, "ssh key plaintext")
    try:
        if r.u8() != 1:
            raise SshKeyError("damaged", "version")
        location, approval_b = r.u8(), r.u8()
        if location not in (1, 2):
            raise SshKeyError("damaged", "location")
        approval = {v: k for k, v in SSH_APPROVALS.items()}.get(approval_b)
        if approval is None:
            raise SshKeyError("damaged", "approval")
        created = r.u64()
        name = r.take(r.u16()).decode("utf-8")
        comment = r.take(r.u16()).decode("utf-8")
        secret = r.take(r.u32())
        if location == 2 and len(secret) != 6:
            raise SshKeyError("damaged", "card secret")
        constraints = r.take(r.u32())
        r.done()
    except (VaultError, UnicodeDecodeError) as exc:
        raise SshKeyError("damaged", str(exc)) from None
    return {"location": location, "approval": approval, "created": created, "name": name,
            "comment": comment, "secret": secret, "constraints": constraints}


def ssh_key_slot_id(key_id: bytes) -> str:
    assert len(key_id) == 16
    return key_id.hex()


# ---------------------------------------------------------------------------
# §10 Vault file
# ---------------------------------------------------------------------------

MAGIC = bytes.fromhex("894B57560D0A1A0A")
READER_VERSION = 1
HEADER_LEN = 18  # magic 8 + version 2 + file_len 8
CHECKSUM_LEN = 32


def check_envelope(data: bytes, reader_version: int = READER_VERSION) -> tuple[int, bytes]:
    """§10.1 -- returns (version, body).  Raises VaultError with the class of
    the first failing check, in the documented order."""
    n = len(data)
    # 1. magic
    if n < len(MAGIC):
        if MAGIC.startswith(data):
            raise VaultError("truncated", "empty or prefix of the magic")
        raise VaultError("not a vault")
    if data[:8] != MAGIC:
        raise VaultError("not a vault")
    # GUESS (F-ENV1): magic intact but the header (18 bytes) is incomplete, so
    # file_len cannot be read -> truncated.
    if n < HEADER_LEN:
        raise VaultError("truncated", "header incomplete")
    (file_len,) = struct.unpack(">Q", data[10:18])

    if n < HEADER_LEN + CHECKSUM_LEN:
        # §10.1: fewer than 50 bytes with an intact magic is truncated.
        raise VaultError("truncated", f"{n} bytes, shorter than header + checksum")

    def checksum_ok_with_actual_length() -> bool:
        # §10.1 step 2: the checksum over the bytes with file_len replaced by
        # the actual length.
        patched = data[:10] + struct.pack(">Q", n) + data[18 : n - 32]
        return sha256(patched) == data[n - 32 :]

    # 2. the length
    if file_len != n:
        if checksum_ok_with_actual_length():
            raise VaultError("damaged", "length field wrong, checksum right")
        if n < file_len:
            raise VaultError("truncated", f"{n} bytes, header says {file_len}")
        raise VaultError("trailing data", f"{n} bytes, header says {file_len}")
    # 3. the checksum
    if sha256(data[: n - 32]) != data[n - 32 :]:
        raise VaultError("damaged", "checksum mismatch")
    # 4. the version
    (version,) = struct.unpack(">H", data[8:10])
    if version == 0:
        # GUESS (F-ENV3): "0 is invalid" names no class.
        raise VaultError("invalid version", "version 0")
    if version > reader_version:
        raise VaultError("newer version", f"version {version}: upgrade keyward")
    return version, data[HEADER_LEN : n - CHECKSUM_LEN]


@dataclass
class PasswordWrap:
    slot_id: str
    salt16: bytes
    m_kib: int
    t: int
    p: int
    nonce: bytes
    ct: bytes


@dataclass
class RecoveryWrap:
    code_id: bytes
    created: int
    last_used: int
    nonce: bytes
    ct: bytes


@dataclass
class PivWrap:
    serial: int
    slot: int
    pin_policy: int
    touch_policy: int
    card_pk: bytes
    epk: bytes
    added: int
    last_used: int
    nonce: bytes
    ct: bytes


@dataclass
class Protector:
    kind: int
    added: int
    last_used: int
    flags: int


@dataclass
class ItemRecord:
    item_id: bytes
    nonce: bytes
    ct: bytes


@dataclass
class SshKeyRecord:
    key_id: bytes
    public: bytes
    nonce: bytes
    ct: bytes


@dataclass
class Vault:
    version: int
    account_id: str
    created: int
    generation: int
    records: list  # (type, parsed) in file order
    mac: bytes
    mac_input: bytes  # bytes[0 .. end of the last record]

    def of(self, cls):
        return [r for _, r in self.records if isinstance(r, cls)]


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise VaultError("malformed", f"{self.what}: short by {self.pos + n - len(self.data)} bytes")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def done(self) -> None:
        if self.pos != len(self.data):
            raise VaultError("malformed", f"{self.what}: {len(self.data) - self.pos} bytes not consumed")


# Every record-level / body-level error below uses class "malformed".
# GUESS (F-BODY1): the document says these "are errors" but names no class.


def _parse_password_wrap(r: _Reader) -> PasswordWrap:
    slot_len = r.u8()
    slot = r.take(slot_len)
    # GUESS (F-REC1): "ASCII printable" = 0x20..0x7E; empty slot id refused.
    if slot_len == 0 or any(not 0x20 <= b <= 0x7E for b in slot) or b"|" in slot:
        raise VaultError("malformed", "password wrap: bad slot id")
    salt16 = r.take(16)
    m_kib, t, p = r.u32(), r.u32(), r.u32()
    check_kdf_params_on_load(m_kib, t, p)
    nonce = r.take(12)
    ct_len = r.u16()
    if ct_len != 48:
        raise VaultError("malformed", f"password wrap: ct_len {ct_len} != 48")
    ct = r.take(48)
    return PasswordWrap(slot.decode("ascii"), salt16, m_kib, t, p, nonce, ct)


def _parse_recovery_wrap(r: _Reader) -> RecoveryWrap:
    code_id = r.take(8)
    created, last_used = r.u64(), r.u64()
    nonce = r.take(12)
    ct_len = r.u16()
    if ct_len != 48:
        raise VaultError("malformed", f"recovery wrap: ct_len {ct_len} != 48")
    return RecoveryWrap(code_id, created, last_used, nonce, r.take(48))


def _parse_point(b: bytes, what: str) -> bytes:
    if b[0] not in (2, 3):
        raise VaultError("malformed", f"{what}: not a compressed SEC1 point")
    try:
        load_sec1(b)
    except ValueError:
        raise VaultError("malformed", f"{what}: not a P-256 point") from None
    return b


def _parse_piv_wrap(r: _Reader) -> PivWrap:
    serial, slot, pin, touch = r.u32(), r.u8(), r.u8(), r.u8()
    if pin not in (1, 2, 3) or touch not in (1, 2, 3):
        raise VaultError("malformed", "PIV wrap: unknown policy")
    card_pk = _parse_point(r.take(33), "PIV card_pk")
    epk = _parse_point(r.take(33), "PIV epk")
    added, last_used = r.u64(), r.u64()
    nonce = r.take(12)
    ct_len = r.u16()
    if ct_len != 51:
        raise VaultError("malformed", f"PIV wrap: ct_len {ct_len} != 51")
    return PivWrap(serial, slot, pin, touch, card_pk, epk, added, last_used, nonce, r.take(51))


def _parse_protector(r: _Reader) -> Protector:
    kind = r.u8()
    if kind not in (1, 2):
        raise VaultError("malformed", f"protector: unknown kind {kind}")
    added, last_used, flags = r.u64(), r.u64(), r.u8()
    # GUESS (F-REC2): flag bits other than bit 0 are an "unknown enumeration".
    if flags & ~1:
        raise VaultError("malformed", f"protector: unknown flags {flags:#x}")
    return Protector(kind, added, last_used, flags)


ITEM_CT_MAX = NAME_MAX + VALUE_MAX + 22 + 16


def _parse_item(r: _Reader) -> ItemRecord:
    item_id = r.take(16)
    nonce = r.take(12)
    ct_len = r.u32()
    if not 16 <= ct_len <= ITEM_CT_MAX:
        raise VaultError("malformed", f"item: ct_len {ct_len} out of range")
    return ItemRecord(item_id, nonce, r.take(ct_len))


SSH_PUBLIC_MAX, SSH_CT_MIN, SSH_CT_MAX = 16384, 16, 65536


def _parse_ssh_key(r: _Reader) -> SshKeyRecord:
    key_id = r.take(16)
    public_len = r.u16()
    if not 1 <= public_len <= SSH_PUBLIC_MAX:
        raise VaultError("malformed", f"ssh key: public_len {public_len} out of range")
    public = r.take(public_len)
    nonce = r.take(12)
    ct_len = r.u32()
    if not SSH_CT_MIN <= ct_len <= SSH_CT_MAX:
        raise VaultError("malformed", f"ssh key: ct_len {ct_len} out of range")
    return SshKeyRecord(key_id, public, nonce, r.take(ct_len))


RECORD_PARSERS = {
    0x01: (_parse_password_wrap, lambda x: ("pw", x.slot_id)),
    0x02: (_parse_recovery_wrap, lambda x: ("rc", x.code_id)),
    0x03: (_parse_piv_wrap, lambda x: ("piv", x.serial, x.slot)),
    0x04: (_parse_protector, lambda x: ("prot", x.kind)),
    0x05: (_parse_item, lambda x: ("item", x.item_id)),
    0x09: (_parse_ssh_key, lambda x: ("ssh", x.key_id)),
}


def read_vault(data: bytes) -> Vault:
    version, body = check_envelope(data)
    assert version == 1
    r = _Reader(body, "body")
    acct_b = r.take(6)
    try:
        account_id = acct_b.decode("ascii")
    except UnicodeDecodeError:
        account_id = ""
    if not is_account_id(account_id):
        raise VaultError("malformed", "account ID")
    created, generation, count = r.u64(), r.u64(), r.u32()
    records, seen = [], set()
    for i in range(count):
        rtype, rlen = r.u8(), r.u32()
        payload = r.take(rlen)
        if rtype not in RECORD_PARSERS:
            raise VaultError("malformed", f"record {i}: unknown type {rtype:#04x}")
        parse, ident = RECORD_PARSERS[rtype]
        rr = _Reader(payload, f"record {i} (type {rtype:#04x})")
        rec = parse(rr)
        rr.done()
        keys = [ident(rec)]
        if rtype == 0x09:
            keys.append(("ssh public", rec.public))  # §10.3: a second record with the same blob
        for key in keys:
            if key in seen:
                raise VaultError("malformed", f"record {i}: duplicate {key!r}")
            seen.add(key)
        records.append((rtype, rec))
    end_of_records = HEADER_LEN + r.pos
    mac = r.take(32)
    r.done()
    npw = sum(1 for t, _ in records if t == 0x01)
    if npw not in (1, 2):
        raise VaultError("malformed", f"{npw} password wraps (need 1 or 2)")
    return Vault(version, account_id, created, generation, records, mac, data[:end_of_records])


# --- writer (used only to build mutated / synthetic files for the tests) ---


def _ser_record(rtype: int, rec) -> bytes:
    if rtype == 0x01:
        s = rec.slot_id.encode("ascii")
        p = bytes([len(s)]) + s + rec.salt16 + struct.pack(">III", rec.m_kib, rec.t, rec.p)
        p += rec.nonce + struct.pack(">H", len(rec.ct)) + rec.ct
    elif rtype == 0x02:
        p = rec.code_id + struct.pack(">QQ", rec.created, rec.last_used) + rec.nonce
        p += struct.pack(">H", len(rec.ct)) + rec.ct
    elif rtype == 0x03:
        p = struct.pack(">IBBB", rec.serial, rec.slot, rec.pin_policy, rec.touch_policy)
        p += rec.card_pk + rec.epk + struct.pack(">QQ", rec.added, rec.last_used)
        p += rec.nonce + struct.pack(">H", len(rec.ct)) + rec.ct
    elif rtype == 0x04:
        p = struct.pack(">BQQB", rec.kind, rec.added, rec.last_used, rec.flags)
    elif rtype == 0x05:
        p = rec.item_id + rec.nonce + struct.pack(">I", len(rec.ct)) + rec.ct
    elif rtype == 0x09:
        p = rec.key_id + struct.pack(">H", len(rec.public)) + rec.public + rec.nonce
        p += struct.pack(">I", len(rec.ct)) + rec.ct
    else:
        raise ValueError(rtype)
    return bytes([rtype]) + struct.pack(">I", len(p)) + p


def write_vault(account_id: str, created: int, generation: int, records, mkey: bytes | None,
                version: int = 1, mac: bytes | None = None) -> bytes:
    """Serialise a v1 file.  `mkey` None + `mac` given = keep a stale MAC."""
    recs = b"".join(_ser_record(t, r) for t, r in records)
    body_head = account_id.encode("ascii") + struct.pack(">QQI", created, generation, len(records))
    total = HEADER_LEN + len(body_head) + len(recs) + 32 + 32
    prefix = MAGIC + struct.pack(">HQ", version, total) + body_head + recs
    if mac is None:
        mac = hmac_sha256(mkey, prefix)
    out = prefix + mac
    return out + sha256(out)


def refresh_checksum(data: bytes) -> bytes:
    return data[:-32] + sha256(data[:-32])


# ---------------------------------------------------------------------------
# §11 Operations: unlock
# ---------------------------------------------------------------------------


@dataclass
class Unlocked:
    account_key: bytes
    items: list = field(default_factory=list)
    opened_by: str = ""


def _finish_unlock(vault: Vault, account_key: bytes, opened_by: str) -> Unlocked:
    want = hmac_sha256(mac_key(account_key, vault.account_id), vault.mac_input)
    if not hmac.compare_digest(want, vault.mac):
        raise UnlockError("tampered")
    ik = item_key(account_key, vault.account_id)
    items, names = [], set()
    for rec in vault.of(ItemRecord):
        try:
            pt = open_wrap(ik, "item", vault.account_id, item_slot_id(rec.item_id), rec.nonce, rec.ct)
        except InvalidTag:
            # GUESS (F-UNL2): an item that fails to open after the MAC verified
            # cannot happen without the account key; class not documented.
            raise UnlockError("tampered", "item does not open") from None
        name, value, created, modified = decode_item(pt)
        if name in names:
            raise ItemError("duplicate name", name)  # GUESS (F-IT2): class not documented
        names.add(name)
        items.append(Item(rec.item_id, name, value, created, modified))
    return Unlocked(account_key, items, opened_by)


def unlock_with_password(vault: Vault, password: str, secret_key_text: str) -> Unlocked:
    sk = parse_secret_key(secret_key_text)  # typos first, before any key work
    if sk.account_id != vault.account_id:
        raise UnlockError("wrong account")  # GUESS (F-UNL1): "say so"; no class named
    pw = normalise_password(password)
    ks = k_s(sk)
    cache: dict = {}
    for w in vault.of(PasswordWrap):
        key = (w.salt16, w.m_kib, w.t, w.p)
        if key not in cache:
            cache[key] = k_m(pw, w.salt16, vault.account_id, w.m_kib, w.t, w.p)
        try:
            ak = open_wrap(auk(cache[key], ks), "password", vault.account_id, w.slot_id, w.nonce, w.ct)
        except InvalidTag:
            continue
        return _finish_unlock(vault, ak, w.slot_id)
    raise UnlockError("wrong Master Password or Secret Key")


def unlock_with_recovery_code(vault: Vault, code_text: str) -> Unlocked:
    code = parse_recovery_code(code_text)  # format check, not an attempt
    cid = recovery_code_id(code, vault.account_id)
    for w in vault.of(RecoveryWrap):
        if w.code_id == cid:
            try:
                ak = open_wrap(recovery_wrap_key(code, vault.account_id), "recovery", vault.account_id,
                               cid.hex(), w.nonce, w.ct)
            except InvalidTag:
                raise UnlockError("tampered", "recovery wrap does not open") from None
            return _finish_unlock(vault, ak, cid.hex())
    raise UnlockError("not found")


def secret_key_from_piv(vault: Vault, card_priv: ec.EllipticCurvePrivateKey, serial: int, slot: int) -> SecretKey:
    for w in vault.of(PivWrap):
        if (w.serial, w.slot) == (serial, slot):
            wk = piv_unwrap_card(card_priv, w.epk)
            pt = open_wrap(wk, "piv", vault.account_id, piv_slot_id(serial, slot), w.nonce, w.ct)
            return parse_secret_key(pt.decode("ascii"))
    raise UnlockError("not found")


# ---------------------------------------------------------------------------
# Test harness
# ---------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.by_file: dict[str, list] = {}
        self.current = "?"

    def section(self, name: str):
        self.current = name
        self.by_file.setdefault(name, [])

    def check(self, what: str, got, want) -> bool:
        ok = got == want
        self.by_file[self.current].append((ok, what, got, want))
        if not ok:
            g = got.hex() if isinstance(got, bytes) else got
            w = want.hex() if isinstance(want, bytes) else want
            print(f"  FAIL [{self.current}] {what}\n       got:  {g!r}\n       want: {w!r}")
        return ok

    def ok(self, what: str, cond: bool, detail: str = "") -> bool:
        self.by_file[self.current].append((bool(cond), what, None, None))
        if not cond:
            print(f"  FAIL [{self.current}] {what} {detail}")
        return bool(cond)

    def crash(self, exc: BaseException):
        self.by_file[self.current].append((False, "exception", None, None))
        print(f"  FAIL [{self.current}] unexpected exception:")
        traceback.print_exception(exc)


def expect_error(res: Results, what: str, fn, exc_type, cls: str):
    try:
        fn()
    except exc_type as exc:
        return res.check(what, exc.cls, cls)
    except Exception as exc:  # noqa: BLE001
        return res.ok(what, False, f"raised {type(exc).__name__}: {exc} (want {exc_type.__name__} {cls})")
    return res.ok(what, False, f"no error (want {exc_type.__name__} {cls})")


def H(s: str) -> bytes:
    return bytes.fromhex(s)


def load(vdir: str, name: str):
    with open(os.path.join(vdir, name), encoding="utf-8") as f:
        return json.load(f)


# --- per-file tests --------------------------------------------------------


def test_secret_key(res: Results, vdir: str):
    v = load(vdir, "secret_key.json")
    for e in v["valid"]:
        sk = parse_secret_key(e["input"])
        tag = e["canonical"]
        res.check(f"{tag} canonical", sk.display, e["canonical"])
        res.check(f"{tag} account_id", sk.account_id, e["account_id"])
        res.check(f"{tag} secret", sk.secret, e["secret"])
        res.check(f"{tag} check_symbol", sk.check, e["check_symbol"])
        res.check(f"{tag} check recomputed", secret_key_check(sk.compact[:34]), e["check_symbol"])
        res.check(f"{tag} k_s", k_s(sk), H(e["k_s"]))
        res.check(f"{tag} canonical reparses", parse_secret_key(e["canonical"]), sk)
        # Documented property: every single substitution and adjacent swap is caught.
        c = sk.compact
        missed = []
        for i in range(2, 35):
            for a in ALPHABET:
                if a != c[i]:
                    t = c[:i] + a + c[i + 1 :]
                    try:
                        parse_secret_key(t)
                        missed.append(t)
                    except SecretKeyError:
                        pass
        for i in range(34):
            if c[i] != c[i + 1]:
                t = c[:i] + c[i + 1] + c[i] + c[i + 2 :]
                try:
                    parse_secret_key(t)
                    missed.append(t)
                except SecretKeyError:
                    pass
        res.ok(f"{tag}: all substitutions and adjacent swaps rejected", not missed, str(missed[:3]))
    for e in v["invalid"]:
        expect_error(res, f"invalid {e['input']!r}", lambda: parse_secret_key(e["input"]), SecretKeyError, e["error"])
    # Separator handling from the document (no vector covers these):
    base = v["valid"][0]["canonical"]
    fancy = base.replace("-", "\u2010", 2).replace("-", "_", 1).replace("-", "\u2212") + "\u3000"
    res.check("U+2010/_/U+2212/U+3000 separators accepted", parse_secret_key(fancy).display, base)
    expect_error(res, "'1' outside the prefix -> symbol", lambda: parse_secret_key("K1-ABCDE1" + base[9:]), SecretKeyError, "symbol")
    expect_error(res, "order: length before prefix", lambda: parse_secret_key("X" + base), SecretKeyError, "length")
    expect_error(res, "order: prefix before symbol", lambda: parse_secret_key("KO" + base[2:]), SecretKeyError, "prefix")


def test_password(res: Results, vdir: str):
    for e in load(vdir, "password.json"):
        if "error" in e:
            expect_error(res, f"raw {e['raw']!r}", lambda: normalise_password(e["raw"]), PasswordError, e["error"])
        else:
            res.check(f"raw {e['raw']!r}", normalise_password(e["raw"]), H(e["normalized_utf8_hex"]))
    # Documented but not covered by any vector:
    res.check("trim happens before NFKD (trailing U+00A8 keeps its NFKD space)",
              normalise_password("pw\u00a8"), "pw \u0308".encode())
    res.check("inner white space kept", normalise_password(" a  b "), b"a  b")


def test_argon2id(res: Results, vdir: str):
    for e in load(vdir, "argon2id.json"):
        tag = f"{e['account_id']} m={e['m_kib']} t={e['t']} p={e['p']}"
        pw = normalise_password(e["password"])
        res.check(f"{tag} password_normalized", pw, H(e["password_normalized_hex"]))
        res.check(f"{tag} argon_salt", argon_salt(H(e["salt16"]), e["account_id"]), H(e["argon_salt"]))
        res.check(f"{tag} k_m", k_m(pw, H(e["salt16"]), e["account_id"], e["m_kib"], e["t"], e["p"]), H(e["k_m"]))
    # §4 parameter rules (no vector): new wraps vs loading
    for (m, t, p), new_ok, load_ok in (((65536, 3, 4), True, True), ((19456, 2, 1), True, True),
                                       ((19455, 2, 1), False, True), ((19456, 1, 1), False, True),
                                       ((64, 2, 8), False, True), ((63, 2, 8), False, False),
                                       ((4194304, 64, 64), True, True), ((4194305, 2, 1), False, False)):
        for rule, fn, want in (("new wrap", check_kdf_params_for_new_wrap, new_ok),
                               ("load", check_kdf_params_on_load, load_ok)):
            try:
                fn(m, t, p)
                got = True
            except (ValueError, VaultError):
                got = False
            res.check(f"{rule} accepts m={m} t={t} p={p}", got, want)


def test_auk(res: Results, vdir: str):
    e = load(vdir, "auk.json")
    sk = parse_secret_key(e["secret_key"])
    km = k_m(normalise_password(e["password"]), H(e["salt16"]), sk.account_id, e["m_kib"], e["t"], e["p"])
    ks = k_s(sk)
    a = auk(km, ks)
    res.check("k_m", km, H(e["k_m"]))
    res.check("k_s", ks, H(e["k_s"]))
    res.check("auk", a, H(e["auk"]))
    w = e["wrap"]
    res.check("wrap slot_id", password_slot_id(1), w["slot_id"])
    res.check("wrap aad", wrap_aad(w["purpose"], sk.account_id, w["slot_id"]), w["aad"].encode())
    ct = seal(a, w["purpose"], sk.account_id, w["slot_id"], H(w["nonce"]), H(e["account_key"]))
    res.check("wrap ciphertext_and_tag", ct, H(w["ciphertext_and_tag"]))
    res.check("wrap opens to account_key",
              open_wrap(a, w["purpose"], sk.account_id, w["slot_id"], H(w["nonce"]), H(w["ciphertext_and_tag"])),
              H(e["account_key"]))
    res.check("item_key", item_key(H(e["account_key"]), sk.account_id), H(e["item_key"]))
    res.check("vault_mac_key", mac_key(H(e["account_key"]), sk.account_id), H(e["vault_mac_key"]))


def test_wrap(res: Results, vdir: str):
    for e in load(vdir, "wrap.json"):
        tag = e["purpose"]
        res.check(f"{tag} aad", wrap_aad(e["purpose"], e["account_id"], e["slot_id"]), e["aad"].encode())
        ct = seal(H(e["key"]), e["purpose"], e["account_id"], e["slot_id"], H(e["nonce"]), H(e["plaintext"]))
        res.check(f"{tag} ciphertext_and_tag", ct, H(e["ciphertext_and_tag"]))
        res.check(f"{tag} opens", open_wrap(H(e["key"]), e["purpose"], e["account_id"], e["slot_id"],
                                            H(e["nonce"]), H(e["ciphertext_and_tag"])), H(e["plaintext"]))
        bad = bytearray(H(e["ciphertext_and_tag"]))
        bad[-1] ^= 1
        try:
            open_wrap(H(e["key"]), e["purpose"], e["account_id"], e["slot_id"], H(e["nonce"]), bytes(bad))
            res.ok(f"{tag} flipped tag rejected", False)
        except InvalidTag:
            res.ok(f"{tag} flipped tag rejected", True)
        if e["purpose"] == "piv":
            # The plaintext is meant to be a Secret Key (§6); report whether it is valid.
            pt = H(e["plaintext"]).decode("ascii")
            try:
                parse_secret_key(pt)
                note = "valid"
            except SecretKeyError as exc:
                note = f"NOT a valid Secret Key ({exc.cls}; check should be {secret_key_check(pt[:34])})"
            print(f"  note [wrap.json] piv plaintext {pt}: {note}")


def test_items(res: Results, vdir: str):
    e = load(vdir, "items.json")
    ik = item_key(H(e["account_key"]), e["account_id"])
    res.check("item_key", ik, H(e["item_key"]))
    pt = encode_item(e["name"], H(e["value"]), e["created"], e["modified"])
    res.check("plaintext", pt, H(e["plaintext"]))
    res.check("decode", decode_item(H(e["plaintext"])), (e["name"], H(e["value"]), e["created"], e["modified"]))
    sid = item_slot_id(H(e["item_id"]))
    res.check("aad", wrap_aad("item", e["account_id"], sid), e["aad"].encode())
    res.check("ciphertext_and_tag", seal(ik, "item", e["account_id"], sid, H(e["nonce"]), pt), H(e["ciphertext_and_tag"]))
    # documented limits
    expect_error(res, "empty name refused", lambda: encode_item("", b"", 0, 0), ItemError, "name")
    expect_error(res, "257-byte name refused", lambda: encode_item("x" * 257, b"", 0, 0), ItemError, "name")
    expect_error(res, "control char refused", lambda: encode_item("a\nb", b"", 0, 0), ItemError, "name")
    expect_error(res, "61441-byte value refused", lambda: encode_item("a", b"\0" * 61441, 0, 0), ItemError, "value")
    expect_error(res, "trailing byte refused", lambda: decode_item(H(e["plaintext"]) + b"\0"), ItemError, "malformed")


def test_recovery(res: Results, vdir: str):
    for e in load(vdir, "recovery.json"):
        code = H(e["code"])
        tag = e["code"][:8] + "…"
        res.check(f"{tag} display", recovery_display(code), e["display"])
        res.check(f"{tag} display length 68", len(recovery_display(code)), 68)
        res.check(f"{tag} parse(display)", parse_recovery_code(e["display"]), code)
        res.check(f"{tag} parse(typed)", parse_recovery_code(e["typed"]), code)
        res.check(f"{tag} code_id", recovery_code_id(code, e["account_id"]), H(e["code_id"]))
        res.check(f"{tag} wrap_key", recovery_wrap_key(code, e["account_id"]), H(e["wrap_key"]))
        # check bits: every single-symbol substitution; §8 says 15 of 16 are caught.
        # The last symbol holds 1 code bit + the 4 check bits: of its 31 substitutions,
        # the 15 that keep the code bit are always caught and 1 of the 16 others is not.
        d = e["display"]
        syms = d[4:].replace("-", "")
        total = caught = last_caught = 0
        for pos in range(52):
            for c in CROCKFORD:
                if c == syms[pos]:
                    continue
                total += 1
                try:
                    parse_recovery_code(syms[:pos] + c + syms[pos + 1 :])
                except RecoveryCodeError as exc:
                    caught += exc.cls == "check"
                    last_caught += pos == 51 and exc.cls == "check"
        res.check(f"{tag} last-symbol substitutions caught", last_caught, 30)
        res.ok(f"{tag} single substitutions caught ~15/16 ({caught}/{total})", 0.90 < caught / total < 0.98)
    expect_error(res, "51 symbols -> length", lambda: parse_recovery_code("0" * 51), RecoveryCodeError, "length")
    expect_error(res, "'U' -> symbol", lambda: parse_recovery_code("U" * 52), RecoveryCodeError, "symbol")


def test_piv(res: Results, vdir: str):
    e = load(vdir, "piv.json")
    card = ec.derive_private_key(int(e["card_private_scalar"], 16), CURVE)
    card_pk = card.public_key()
    res.check("card_pk_compressed", sec1c(card_pk), H(e["card_pk_compressed"]))
    res.check("card_pk_uncompressed", sec1_uncompressed(card_pk), H(e["card_pk_uncompressed"]))
    res.check("compressed decodes to the same point",
              sec1_uncompressed(load_sec1(H(e["card_pk_compressed"]))), H(e["card_pk_uncompressed"]))
    epk_c, shared, wk = piv_wrap_host(int(e["ephemeral_scalar"], 16), card_pk)
    res.check("epk_compressed", epk_c, H(e["epk_compressed"]))
    res.check("shared_x", shared, H(e["shared_x"]))
    res.check("wrap_key", wk, H(e["wrap_key"]))
    res.check("card-side wrap_key", piv_unwrap_card(card, epk_c), H(e["wrap_key"]))
    slot = int(e["slot"], 16)
    sid = piv_slot_id(e["serial"], slot)
    res.check("slot_id", sid, e["slot_id"])
    sk = parse_secret_key(e["secret_key_compact"])
    res.check("secret_key_compact is a valid key in compact form", sk.compact, e["secret_key_compact"])
    res.check("aad", wrap_aad("piv", sk.account_id, sid), e["aad"].encode())
    ct = seal(wk, "piv", sk.account_id, sid, H(e["nonce"]), sk.compact.encode("ascii"))
    res.check("ciphertext_and_tag", ct, H(e["ciphertext_and_tag"]))


# --- organizer recovery (§16) ------------------------------------------------


class RecipientError(KeywardError):
    pass


def organizer_recipient(pk_c: bytes) -> str:
    check = sha256(b"keyward/v1 organizer-recipient" + pk_c)[:4]
    n = int.from_bytes(pk_c + check, "big") << 4  # 296 bits + 4 zero bits
    syms = "".join(CROCKFORD[(n >> (5 * (59 - i))) & 31] for i in range(60))
    return "kwo1-" + "-".join(syms[i : i + 4] for i in range(0, 60, 4))


def parse_organizer_recipient(text: str) -> bytes:
    s = _strip_separators(text)
    if len(s) < 4 or s[:3].lower() != "kwo" or s[3] not in "1IiLl":
        raise RecipientError("prefix")
    body = s[4:]
    if len(body) != 60:
        raise RecipientError("length")
    n = 0
    for c in body:
        c = _RC_ALIASES.get(c, c).upper() if c.isascii() else c
        if c not in CROCKFORD:
            raise RecipientError("symbol")
        n = (n << 5) | CROCKFORD.index(c)
    if n & 15:
        raise RecipientError("check")
    raw = (n >> 4).to_bytes(37, "big")
    pk, check = raw[:33], raw[33:]
    if sha256(b"keyward/v1 organizer-recipient" + pk)[:4] != check:
        raise RecipientError("check")
    load_sec1(pk)
    return pk


def organizer_fingerprint(pk_c: bytes) -> str:
    x = sha256(b"keyward/v1 organizer-fingerprint" + pk_c)[:8].hex()
    return "-".join(x[i : i + 4] for i in range(0, 16, 4))


def grant_display(code: bytes) -> str:
    bits = sha256(b"keyward/v1 grant-check" + code)[0] >> 4
    n = (int.from_bytes(code, "big") << 4) | bits
    syms = "".join(CROCKFORD[(n >> (5 * (51 - i))) & 31] for i in range(52))
    return "GC1-" + "-".join(syms[i : i + 4] for i in range(0, 52, 4))


def test_organizer(res: Results, vdir: str):
    e = load(vdir, "organizer.json")
    org = ec.derive_private_key(int(e["organizer_private_scalar"], 16), CURVE)
    pk_c = sec1c(org.public_key())
    res.check("organizer_pk_compressed", pk_c, H(e["organizer_pk_compressed"]))
    res.check("recipient", organizer_recipient(pk_c), e["recipient"])
    res.check("recipient parses", parse_organizer_recipient(e["recipient"]), pk_c)
    res.check("recipient_typed parses", parse_organizer_recipient(e["recipient_typed"]), pk_c)
    res.check("fingerprint", organizer_fingerprint(pk_c), e["fingerprint"])
    acct = e["account_id"]
    eph = ec.derive_private_key(int(e["ephemeral_scalar"], 16), CURVE)
    epk_c = sec1c(eph.public_key())
    shared = eph.exchange(ec.ECDH(), org.public_key())
    res.check("epk_compressed", epk_c, H(e["epk_compressed"]))
    res.check("shared_x", shared, H(e["shared_x"]))
    wk = hkdf(shared, epk_c + pk_c, b"keyward/v1 organizer-p256")
    res.check("wrap_key", wk, H(e["wrap_key"]))
    org_side = hkdf(org.exchange(ec.ECDH(), load_sec1(epk_c)), epk_c + pk_c,
                    b"keyward/v1 organizer-p256")
    res.check("organizer-side wrap_key", org_side, wk)
    sid = sha256(pk_c)[:8].hex()
    res.check("slot_id", sid, e["slot_id"])
    res.check("aad", wrap_aad("organizer", acct, sid), e["aad"].encode())
    ct = seal(wk, "organizer", acct, sid, H(e["nonce"]), H(e["account_key"]))
    res.check("ciphertext_and_tag", ct, H(e["ciphertext_and_tag"]))
    g = e["grant"]
    code = H(g["code"])
    res.check("grant display", grant_display(code), g["display"])
    gk = hkdf(code, acct.encode("ascii"), b"keyward/v1 grant-wrap")
    res.check("grant_key", gk, H(g["grant_key"]))
    gslot = g["grant_id"] + "|" + str(g["expires"])
    res.check("grant aad", wrap_aad("grant", acct, gslot), g["aad"].encode())
    gct = seal(gk, "grant", acct, gslot, H(g["nonce"]), H(e["account_key"]))
    res.check("grant ciphertext_and_tag", gct, H(g["ciphertext_and_tag"]))
    f = json.loads(g["file"])
    res.check("grant file keys", sorted(f),
              sorted(["format", "version", "account_id", "grant_id", "expires", "nonce", "ct"]))
    res.check("grant file fields",
              (f["format"], f["version"], f["account_id"], f["grant_id"], f["expires"], f["nonce"], f["ct"]),
              ("keyward-grant", 1, acct, g["grant_id"], g["expires"], g["nonce"], g["ciphertext_and_tag"]))


# --- vault -----------------------------------------------------------------


def test_ssh_key(res: Results, vdir: str):
    v = load(vdir, "ssh_key.json")
    acct, ak = v["account_id"], H(v["account_key"])
    ik = item_key(ak, acct)
    res.check("item_key", ik, H(v["item_key"]))
    for e in v["keys"]:
        tag = e["name"]
        if e["location"] == "vault":
            seed = H(e["ed25519_seed"])
            res.check(f"{tag} ed25519_public", ed25519_public(seed), H(e["ed25519_public"]))
            public = ssh_ed25519_blob(ed25519_public(seed))
            secret = ssh_ed25519_agent_private(seed)
            res.check(f"{tag} private (agent form)", secret, H(e["private"]))
            location = 1
        else:
            public = ssh_p256_blob(int(e["p256_scalar"], 16))
            c = e["card"]
            secret = card_secret(c["serial"], int(c["slot"], 16), c["touch"])
            location = 2
        res.check(f"{tag} public", public, H(e["public"]))
        dests = []
        for d in e["constraints"]:
            hops = []
            for hop in (d["from"], d["to"]):
                keys = []
                for k in hop["keys"]:
                    blob = ssh_ed25519_blob(ed25519_public(H(k["ed25519_seed"])))
                    res.check(f"{tag} host key blob", blob, H(k["blob"]))
                    keys.append((blob, k["ca"]))
                hops.append((hop["user"], hop["hostname"], keys))
            dests.append(tuple(hops))
        constraints = ssh_constraints(None, dests)
        res.check(f"{tag} constraints_bytes", constraints, H(e["constraints_bytes"]))
        pt = encode_ssh_key_plaintext(location, e["approval"], e["created"], e["name"], e["comment"],
                                      secret, constraints)
        res.check(f"{tag} plaintext", pt, H(e["plaintext"]))
        key_id = H(e["key_id"])
        sid = ssh_key_slot_id(key_id)
        res.check(f"{tag} slot_id", sid, e["slot_id"])
        res.check(f"{tag} aad", wrap_aad("ssh-key", acct, sid), e["aad"].encode())
        ct = seal(ik, "ssh-key", acct, sid, H(e["nonce"]), pt)
        res.check(f"{tag} ciphertext_and_tag", ct, H(e["ciphertext_and_tag"]))
        rec = SshKeyRecord(key_id, public, H(e["nonce"]), ct)
        res.check(f"{tag} record_payload", _ser_record(0x09, rec)[5:], H(e["record_payload"]))
        # ... and back: parse the payload, open it, decode the plaintext.
        rr = _Reader(H(e["record_payload"]), "ssh key record")
        back = _parse_ssh_key(rr)
        rr.done()
        res.check(f"{tag} record parses back", back, rec)
        d = decode_ssh_key_plaintext(open_wrap(ik, "ssh-key", acct, ssh_key_slot_id(back.key_id), back.nonce, back.ct))
        res.check(f"{tag} plaintext decodes back",
                  (d["location"], d["approval"], d["created"], d["name"], d["comment"], d["secret"], d["constraints"]),
                  (location, e["approval"], e["created"], e["name"], e["comment"], secret, constraints))
        # The wrap is bound to its key id and purpose.
        other = ssh_key_slot_id(bytes(16))
        for what, fn in (("another key id", lambda: open_wrap(ik, "ssh-key", acct, other, back.nonce, back.ct)),
                         ("purpose item", lambda: open_wrap(ik, "item", acct, sid, back.nonce, back.ct))):
            try:
                fn()
                res.ok(f"{tag}: {what} does not open", False)
            except InvalidTag:
                res.ok(f"{tag}: {what} does not open", True)
    # The reader's refusals (§17.1) and the record bounds (§10.3); no vector holds these.
    good = H(v["keys"][0]["plaintext"])
    for what, bad in (("version 2", b"\x02" + good[1:]), ("location 3", good[:1] + b"\x03" + good[2:]),
                      ("approval 3", good[:2] + b"\x03" + good[3:]), ("a trailing byte", good + b"\0"),
                      ("one byte short", good[:-1])):
        expect_error(res, f"plaintext with {what} -> damaged", lambda: decode_ssh_key_plaintext(bad), SshKeyError, "damaged")
    card7 = (bytes([1, 2, 2]) + struct.pack(">QH", 0, 1) + b"n" + struct.pack(">HI", 0, 7) + bytes(7)
             + struct.pack(">I", 0))
    expect_error(res, "card secret of 7 bytes -> damaged", lambda: decode_ssh_key_plaintext(card7), SshKeyError, "damaged")
    card6 = card7[:16] + struct.pack(">I", 6) + bytes(6) + struct.pack(">I", 0)
    res.check("card secret of 6 bytes decodes", decode_ssh_key_plaintext(card6)["secret"], bytes(6))
    for what, payload in (("public_len 0", bytes(16) + b"\0\0" + bytes(12) + struct.pack(">I", 16) + bytes(16)),
                          ("ct_len 15", bytes(16) + b"\0\x01x" + bytes(12) + struct.pack(">I", 15) + bytes(15)),
                          ("ct_len 65537", bytes(16) + b"\0\x01x" + bytes(12) + struct.pack(">I", 65537) + bytes(65537))):
        expect_error(res, f"record with {what} -> malformed", lambda: _parse_ssh_key(_Reader(payload, "ssh")),
                     VaultError, "malformed")


def test_vault(res: Results, vdir: str):
    e = load(vdir, "vault.json")
    data = H(e["file"])
    vault = read_vault(data)
    want_items = sorted((i["name"], H(i["value"])) for i in e["items"])
    sk = parse_secret_key(e["secret_key"])
    res.check("account ID matches the Secret Key", vault.account_id, sk.account_id)
    pw_wraps = vault.of(PasswordWrap)
    print(f"  info [vault.json] account {vault.account_id}, generation {vault.generation}, "
          f"{len(vault.records)} records: " + ", ".join(f"{t:#04x}" for t, _ in vault.records)
          + "; password wraps: " + ", ".join(f"{w.slot_id} m={w.m_kib} t={w.t} p={w.p}" for w in pw_wraps))
    res.check("re-serialisation is byte-identical",
              write_vault(vault.account_id, vault.created, vault.generation, vault.records, None, mac=vault.mac), data)

    u = unlock_with_password(vault, e["password"], e["secret_key"])
    res.check("password unlock: account_key", u.account_key, H(e["account_key"]))
    res.check("password unlock: items", sorted((i.name, i.value) for i in u.items), want_items)
    for i in u.items:
        res.ok(f"item {i.name!r} created <= modified", i.created <= i.modified)

    res.check("recovery_code_id", recovery_code_id(parse_recovery_code(e["recovery_code"]), vault.account_id),
              H(e["recovery_code_id"]))
    res.check("recovery display round trip", recovery_display(parse_recovery_code(e["recovery_code"])), e["recovery_code"])
    u2 = unlock_with_recovery_code(vault, e["recovery_code"])
    res.check("recovery unlock: account_key", u2.account_key, H(e["account_key"]))
    res.check("recovery unlock: items", sorted((i.name, i.value) for i in u2.items), want_items)

    # Unlock-level errors
    expect_error(res, "wrong password", lambda: unlock_with_password(vault, "wrong", e["secret_key"]),
                 UnlockError, "wrong Master Password or Secret Key")
    other = SecretKey(sk.account_id, "2" * 26, "2")
    other = SecretKey(sk.account_id, "2" * 26, secret_key_check(other.compact[:34]))
    expect_error(res, "wrong Secret Key (same account)", lambda: unlock_with_password(vault, e["password"], other.display),
                 UnlockError, "wrong Master Password or Secret Key")
    expect_error(res, "Secret Key typo caught before key work",
                 lambda: unlock_with_password(vault, e["password"], e["secret_key"][:-1] + "2"), SecretKeyError, "check")
    expect_error(res, "Secret Key of another account",
                 lambda: unlock_with_password(vault, e["password"], "K1-ABCDEF-GHJKLM-NPQRS-TVWXY-Z2345-6789AR"),
                 UnlockError, "wrong account")
    expect_error(res, "empty password", lambda: unlock_with_password(vault, " \t", e["secret_key"]), PasswordError, "empty")
    wrong_code = recovery_display(bytes(32))
    expect_error(res, "well-formed wrong recovery code", lambda: unlock_with_recovery_code(vault, wrong_code),
                 UnlockError, "not found")
    rc = e["recovery_code"]
    typo = rc[:-1] + ("0" if rc[-1] != "0" else "1")
    expect_error(res, "recovery code typo in the check symbol", lambda: unlock_with_recovery_code(vault, typo),
                 RecoveryCodeError, "check")
    return vault, u


def test_vault_errors(res: Results, vdir: str):
    """§10.1 envelope checks and §10.2/10.3 body checks on mutated copies."""
    e = load(vdir, "vault.json")
    data = H(e["file"])
    n = len(data)
    err = lambda d: (lambda: read_vault(d))  # noqa: E731

    # 1. magic
    expect_error(res, "empty file -> truncated", err(b""), VaultError, "truncated")
    for k in (1, 4, 7):
        expect_error(res, f"first {k} bytes (prefix of magic) -> truncated", err(data[:k]), VaultError, "truncated")
    expect_error(res, "3 bytes not a magic prefix -> not a vault", err(b"abc"), VaultError, "not a vault")
    expect_error(res, "text file -> not a vault", err(b"hello, world\n" * 10), VaultError, "not a vault")
    for i in range(8):
        d = bytearray(data)
        d[i] ^= 0x01
        expect_error(res, f"flip magic byte {i} -> not a vault", err(bytes(d)), VaultError, "not a vault")
    # 2. length
    expect_error(res, "magic only (8 bytes) -> truncated [guess F-ENV1]", err(data[:8]), VaultError, "truncated")
    expect_error(res, "17 bytes -> truncated [guess F-ENV1]", err(data[:17]), VaultError, "truncated")
    for k in (18, 49, 50, n // 2, n - 32, n - 1):
        expect_error(res, f"truncated to {k} bytes -> truncated", err(data[:k]), VaultError, "truncated")
    for extra in (b"\0", b"\n", os.urandom(100)):
        expect_error(res, f"{len(extra)} trailing byte(s) -> trailing data", err(data + extra), VaultError, "trailing data")
    # file_len wrong and checksummed as wrong (a buggy writer): classified by length
    for delta, cls in ((-1, "trailing data"), (+1, "truncated"), (1 << 40, "truncated")):
        d = bytearray(data)
        d[10:18] = struct.pack(">Q", n + delta)
        expect_error(res, f"file_len {n + delta}, checksummed as such -> {cls}", err(refresh_checksum(bytes(d))),
                     VaultError, cls)
    # §10.1: under 50 bytes with the magic intact -> truncated
    tiny = MAGIC + struct.pack(">HQ", 1, 40) + bytes(22)
    expect_error(res, "40-byte file whose file_len says 40 -> truncated", err(tiny), VaultError, "truncated")
    # envelope fine, v1 body too short -> malformed [guess F-BODY1]
    short = MAGIC + struct.pack(">HQ", 1, 18 + 10 + 32) + b"CYWB6V" + bytes(4)
    expect_error(res, "valid envelope, 10-byte body -> malformed [guess F-BODY1]", err(short + sha256(short)),
                 VaultError, "malformed")
    # 3. checksum -- a flipped bit anywhere except magic/file_len
    bad = []
    for i in range(8, n):
        if 10 <= i < 18:
            continue
        d = bytearray(data)
        d[i] ^= 0x80
        try:
            read_vault(bytes(d))
            bad.append((i, "accepted"))
        except VaultError as exc:
            if exc.cls != "damaged":
                bad.append((i, exc.cls))
    res.ok(f"flip one bit at each of {n - 16} offsets outside magic/file_len -> damaged", not bad, str(bad[:5]))
    # a flipped bit IN the file_len field (checksum not refreshed): §10.1 step 2
    # recognises damage to the length field.
    got, want = {}, {}
    for i in range(10, 18):
        for bit in (0x01, 0x02, 0x04, 0x80):
            d = bytearray(data)
            d[i] ^= bit
            want[(i, bit)] = "damaged"
            try:
                read_vault(bytes(d))
                got[(i, bit)] = "accepted"
            except VaultError as exc:
                got[(i, bit)] = exc.cls
    res.check("flip a bit in file_len -> damaged (§10.1 step 2)", got, want)
    # 4. version
    for ver, cls in ((0, "invalid version"), (2, "newer version"), (0xFFFF, "newer version")):
        d = bytearray(data)
        d[8:10] = struct.pack(">H", ver)
        expect_error(res, f"version {ver} with valid checksum -> {cls}", err(refresh_checksum(bytes(d))), VaultError, cls)
        expect_error(res, f"version {ver} without checksum fix -> damaged (checksum before version)", err(bytes(d)),
                     VaultError, "damaged")
    # order: truncated beats a bad version; checksum beats version
    d = bytearray(data)
    d[8:10] = struct.pack(">H", 2)
    expect_error(res, "order: newer version + truncated -> truncated", err(bytes(d[:-5])), VaultError, "truncated")
    expect_error(res, "order: newer version + trailing -> trailing data", err(bytes(d) + b"x"), VaultError, "trailing data")

    # Body (checksum fixed): strict parsing.  Class not documented -> "malformed".
    vault = read_vault(data)
    ak = H(e["account_key"])
    mk = mac_key(ak, vault.account_id)
    recs = list(vault.records)

    def rebuild(records, **kw):
        return write_vault(kw.get("acct", vault.account_id), vault.created, kw.get("gen", vault.generation), records, mk)

    res.check("rebuild with the account key reproduces the file", rebuild(recs), data)
    expect_error(res, "unknown record type 0x06 -> malformed",
                 err(refresh_checksum(data.replace(bytes([0x05, 0, 0, 0, 0x60]), bytes([0x06, 0, 0, 0, 0x60]), 1))),
                 VaultError, "malformed")
    pw = recs[0][1]
    dup = [(1, pw), (1, PasswordWrap(pw.slot_id, *[getattr(pw, f) for f in ("salt16", "m_kib", "t", "p", "nonce", "ct")]))]
    expect_error(res, "duplicate password wrap slot id -> malformed", err(rebuild(dup + recs[1:])), VaultError, "malformed")
    expect_error(res, "duplicate item record -> malformed", err(rebuild(recs + [recs[-1]])), VaultError, "malformed")
    expect_error(res, "no password wrap -> malformed", err(rebuild(recs[1:])), VaultError, "malformed")
    three = [(1, PasswordWrap(f"pw-{g}", pw.salt16, pw.m_kib, pw.t, pw.p, pw.nonce, pw.ct)) for g in (1, 2, 3)]
    expect_error(res, "three password wraps -> malformed", err(rebuild(three + recs[1:])), VaultError, "malformed")
    for (m, t, p) in ((pw.m_kib, 0, 1), (pw.m_kib, 65, 1), (pw.m_kib, 2, 0), (pw.m_kib, 2, 65),
                      (4194305, 2, 1), (31, 2, 4)):
        bad_pw = PasswordWrap(pw.slot_id, pw.salt16, m, t, p, pw.nonce, pw.ct)
        expect_error(res, f"load refuses m={m} t={t} p={p}", err(rebuild([(1, bad_pw)] + recs[1:])), VaultError, "malformed")
    for slot in ("a|b", "pw\x7f1", ""):
        bad_pw = PasswordWrap(slot, pw.salt16, pw.m_kib, pw.t, pw.p, pw.nonce, pw.ct)
        expect_error(res, f"slot id {slot!r} refused", err(rebuild([(1, bad_pw)] + recs[1:])), VaultError, "malformed")
    # count says one more record than present / payload longer than its parser consumes
    d = bytearray(data)
    off = HEADER_LEN + 6 + 16
    d[off : off + 4] = struct.pack(">I", len(recs) + 1)
    expect_error(res, "count too large -> malformed", err(refresh_checksum(bytes(d))), VaultError, "malformed")
    d[off : off + 4] = struct.pack(">I", len(recs) - 1)
    expect_error(res, "count too small (bytes left before MAC) -> malformed", err(refresh_checksum(bytes(d))),
                 VaultError, "malformed")
    long_rec = bytearray(_ser_record(2, recs[1][1]))
    long_rec[1:5] = struct.pack(">I", len(long_rec) - 5 + 1)
    long_rec += b"\0"
    body_head = vault.account_id.encode() + struct.pack(">QQI", vault.created, vault.generation, len(recs))
    raw = b"".join(_ser_record(t, r) if i != 1 else bytes(long_rec) for i, (t, r) in enumerate(recs))
    pre = MAGIC + struct.pack(">HQ", 1, HEADER_LEN + len(body_head) + len(raw) + 64) + body_head + raw
    f = pre + hmac_sha256(mk, pre)
    expect_error(res, "payload not consumed exactly -> malformed", err(f + sha256(f)), VaultError, "malformed")
    expect_error(res, "body account ID not in A -> malformed", err(rebuild(recs, acct="ABCDE0")), VaultError, "malformed")

    # MAC (checksum fixed, so only the MAC can notice): -> tampered at unlock
    pwd, skt = e["password"], e["secret_key"]
    cases = {
        "records reordered (two items swapped)": recs[:2] + [recs[3], recs[2], recs[4]],
        "item record removed": recs[:-1],
        "recovery record removed": [recs[0]] + recs[2:],
    }
    for what, rr in cases.items():
        f = write_vault(vault.account_id, vault.created, vault.generation, rr, None, mac=vault.mac)
        expect_error(res, f"{what}, stale MAC -> tampered", lambda: unlock_with_password(read_vault(f), pwd, skt),
                     UnlockError, "tampered")
    f = write_vault(vault.account_id, vault.created, vault.generation + 1, recs, None, mac=vault.mac)
    expect_error(res, "generation changed, stale MAC -> tampered", lambda: unlock_with_password(read_vault(f), pwd, skt),
                 UnlockError, "tampered")
    f = write_vault(vault.account_id, vault.created, vault.generation, recs, None, mac=vault.mac[:-1] + b"\0")
    expect_error(res, "MAC byte changed -> tampered (recovery path too)",
                 lambda: unlock_with_recovery_code(read_vault(f), e["recovery_code"]), UnlockError, "tampered")
    rec = recs[1][1]
    rc2 = RecoveryWrap(rec.code_id, rec.created, 12345, rec.nonce, rec.ct)
    f = write_vault(vault.account_id, vault.created, vault.generation, [recs[0], (2, rc2)] + recs[2:], None, mac=vault.mac)
    expect_error(res, "recovery last_used altered -> tampered", lambda: unlock_with_password(read_vault(f), pwd, skt),
                 UnlockError, "tampered")


def test_synthetic_records(res: Results, vdir: str, vault_and_unlocked):
    """Records 0x03 and 0x04 are not in vault.json: build a vault with them
    (self-consistency only -- no vector exists for these layouts)."""
    vault, u = vault_and_unlocked
    e = load(vdir, "vault.json")
    piv = load(vdir, "piv.json")
    sk = parse_secret_key(e["secret_key"])
    card = ec.derive_private_key(int(piv["card_private_scalar"], 16), CURVE)
    epk_c, _, wk = piv_wrap_host(int(piv["ephemeral_scalar"], 16), card.public_key())
    serial, slot = piv["serial"], int(piv["slot"], 16)
    nonce = H(piv["nonce"])
    ct = seal(wk, "piv", vault.account_id, piv_slot_id(serial, slot), nonce, sk.compact.encode("ascii"))
    res.check("PIV ct is 51 bytes", len(ct), 51)
    pw_recs = [r for r in vault.records if r[0] == 1]
    rc_recs = [r for r in vault.records if r[0] == 2]
    it_recs = [r for r in vault.records if r[0] == 5]
    recs = (pw_recs + rc_recs + [(3, PivWrap(serial, slot, 2, 3, sec1c(card.public_key()), epk_c, 1, 0, nonce, ct))]
            + [(4, Protector(1, 2, 3, 0)), (4, Protector(2, 4, 5, 1))] + it_recs)
    mk = mac_key(u.account_key, vault.account_id)
    f = write_vault(vault.account_id, vault.created, vault.generation + 1, recs, mk)
    v2 = read_vault(f)
    res.check("PIV record length 154 + 5", len(_ser_record(3, recs[len(pw_recs) + len(rc_recs)][1])), 159)
    res.check("protector record length 18 + 5", len(_ser_record(4, Protector(1, 0, 0, 0))), 23)
    sk2 = secret_key_from_piv(v2, card, serial, slot)
    res.check("Secret Key from the PIV record (simulated card)", sk2, sk)
    u3 = unlock_with_password(v2, e["password"], sk2.display)
    res.check("unlock with the PIV-provided Secret Key", u3.account_key, u.account_key)
    res.check("protectors parsed", [(p.kind, p.flags) for p in v2.of(Protector)], [(1, 0), (2, 1)])
    bad = [(t, (Protector(3, 0, 0, 0) if t == 4 else r)) for t, r in recs]
    expect_error(res, "protector kind 3 -> malformed", lambda: read_vault(write_vault(vault.account_id, 0, 1, bad, mk)),
                 VaultError, "malformed")
    dup = recs + [(4, Protector(1, 9, 9, 0))]
    expect_error(res, "duplicate protector kind -> malformed", lambda: read_vault(write_vault(vault.account_id, 0, 1, dup, mk)),
                 VaultError, "malformed")
    pv = recs[len(pw_recs) + len(rc_recs)][1]
    for pin, touch in ((0, 1), (4, 1), (1, 0), (1, 4)):
        p2 = PivWrap(pv.serial, pv.slot, pin, touch, pv.card_pk, pv.epk, 0, 0, pv.nonce, pv.ct)
        r2 = [(t, p2 if t == 3 else r) for t, r in recs]
        expect_error(res, f"PIV policy pin={pin} touch={touch} -> malformed",
                     lambda: read_vault(write_vault(vault.account_id, 0, 1, r2, mk)), VaultError, "malformed")


# ---------------------------------------------------------------------------


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    vdir = os.path.normpath(os.path.join(here, "..", "vectors"))
    if len(sys.argv) == 3 and sys.argv[1] == "--vectors":
        vdir = sys.argv[2]
    elif len(sys.argv) != 1:
        sys.stderr.write("usage: keyward_independent.py [--vectors DIR]\n")
        return 2
    res = Results()
    t0 = time.monotonic()
    plan = [
        ("secret_key.json", test_secret_key),
        ("password.json", test_password),
        ("argon2id.json", test_argon2id),
        ("auk.json", test_auk),
        ("wrap.json", test_wrap),
        ("items.json", test_items),
        ("recovery.json", test_recovery),
        ("piv.json", test_piv),
        ("organizer.json", test_organizer),
        ("ssh_key.json", test_ssh_key),
    ]
    for name, fn in plan:
        res.section(name)
        try:
            fn(res, vdir)
        except Exception as exc:  # noqa: BLE001
            res.crash(exc)
    res.section("vault.json")
    vu = None
    try:
        vu = test_vault(res, vdir)
    except Exception as exc:  # noqa: BLE001
        res.crash(exc)
    res.section("vault.json error paths (mutated copies)")
    try:
        test_vault_errors(res, vdir)
    except Exception as exc:  # noqa: BLE001
        res.crash(exc)
    res.section("records 0x03/0x04 (synthetic, no vector)")
    try:
        if vu is None:
            raise RuntimeError("vault.json did not open")
        test_synthetic_records(res, vdir, vu)
    except Exception as exc:  # noqa: BLE001
        res.crash(exc)

    print()
    print("keyward independent implementation (from docs/SECURITY.md only) -- summary")
    failed = 0
    for name, checks in res.by_file.items():
        nf = sum(1 for c in checks if not c[0])
        failed += nf
        status = "PASS" if nf == 0 and checks else "FAIL"
        print(f"  {status}  {name:45s} {len(checks) - nf}/{len(checks)} checks")
    print(f"  {'PASS' if failed == 0 else 'FAIL'}  overall ({time.monotonic() - t0:.1f} s)")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
