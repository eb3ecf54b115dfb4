#!/usr/bin/env python3
"""Verifies one Edge Runner signature with stock pycose (pinned: pycose==1.1.0).

An auditor's check that our COSE is COSE: nothing here knows Edge Runner
beyond what docs/evidence-format.md and docs/capsule-format.md state (the
external AAD of each kind and the `kid` rule). pycose is used as shipped.
Install it with `python3 -m pip install pycose==1.1.0 cbor2==5.9.0`: with
cbor2 6, which pip picks by default, pycose 1.1.0 decodes no message at all
("Bytes cannot be decoded as COSE message": arrays come back as tuples).

    pycose_verify.py record     FILE PUBLIC_KEY_HEX
    pycose_verify.py capsule    FILE PUBLIC_KEY_HEX
    pycose_verify.py trust-root FILE PUBLIC_KEY_HEX

FILE holds one tagged COSE item: for `record`, one record's bytes as in
evidence.log (COSE_Sign1, tag 18); for `capsule`, a detached capsule signature
file, and for `trust-root`, an N.root.cose file (COSE_Sign, tag 98).
PUBLIC_KEY_HEX is the signer's raw 32-byte Ed25519 public key in hex. For a
COSE_Sign, the signature whose `kid` is that key's id is checked.

Exit codes: 0 the signature verifies; 1 it does not, or pycose could not read
the item (the reason is printed on stderr); 2 wrong arguments.
"""

import hashlib
import sys

from pycose.headers import KID
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages import Sign1Message, SignMessage

# External AAD of each kind (docs/evidence-format.md §2, docs/capsule-format.md §2).
CONTEXTS = {
    "record": b"edge-runner/evidence/v1",
    "capsule": b"edge-runner/capsule-signature/v1",
    "trust-root": b"edge-runner/trust-root/v1",
}


def verify(kind: str, item: bytes, public: bytes) -> str:
    """Returns what verified; raises on any failure."""
    key = OKPKey(crv=Ed25519, x=public)
    kid = hashlib.sha256(public).digest()
    if kind == "record":
        msg = Sign1Message.decode(item)
        if not isinstance(msg, Sign1Message):
            raise ValueError("not a COSE_Sign1")
        if msg.get_attr(KID) != kid:
            raise ValueError("record `kid` is not this key's id")
        msg.key = key
        msg.external_aad = CONTEXTS[kind]
        if not msg.verify_signature():
            raise ValueError("signature does not verify")
        return "record"
    msg = SignMessage.decode(item)
    if not isinstance(msg, SignMessage):
        raise ValueError("not a COSE_Sign")
    for index, signer in enumerate(msg.signers):
        if signer.get_attr(KID) == kid:
            signer.key = key
            signer.external_aad = CONTEXTS[kind]
            if not signer.verify_signature():
                raise ValueError(f"signature {index} does not verify")
            return f"signature {index}"
    raise ValueError("no signature carries this key's id")


def main(argv) -> int:
    if len(argv) != 4 or argv[1] not in CONTEXTS:
        print(f"usage: {argv[0]} record|capsule|trust-root FILE PUBLIC_KEY_HEX", file=sys.stderr)
        return 2
    kind, path, public_hex = argv[1:]
    try:
        public = bytes.fromhex(public_hex)
    except ValueError:
        public = b""
    if len(public) != 32:
        print("PUBLIC_KEY_HEX must be 64 hex digits (a raw Ed25519 public key)", file=sys.stderr)
        return 2
    with open(path, "rb") as f:
        item = f.read()
    try:
        what = verify(kind, item, public)
    except Exception as e:  # pycose raises many kinds; any of them means "not verified"
        print(f"{kind} {path}: NOT verified by pycose: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"{kind} {path}: {what} verified by pycose")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
