"""The host side of SAVE and RESTORE: a channel's physics state into a checkpoint and back.

A simulator's noise streams travel in its ``state_dict``; a board's live on the board (the
emulator keeps them with its simulated physics), so a checkpoint of a ``serial`` device is
only complete if it carries the board's state too. Boards announcing ``Cap.STATE`` hand it
over as an opaque blob in chunks (the host never interprets it, the board checks it on the
way back), with the whole blob's CRC-32 and the ``measured`` count. Both transfers run with
the same bounded recovery as a batch: a lost or damaged chunk is resent, a board reset or a
disconnect restarts the transfer from the first chunk, and then ``SerialLinkError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .port import Restart
from .protocol import Cap, Restore, RestoreReply, Save, SaveReply, crc32

if TYPE_CHECKING:
    from .link import Link


def has_state(link: Link) -> bool:
    """True if the connected board can SAVE and RESTORE (announces ``Cap.STATE``)."""
    hello = link.hello
    return hello is not None and bool(Cap(hello.caps) & Cap.STATE)


def save(link: Link) -> tuple[int, bytes] | None:
    """The board's ``(measured, state blob)`` for this channel; None if it cannot save."""
    return link.recovering("could not save the board's state", "state save", lambda: _save(link))


def restore(link: Link, measured: int, blob: bytes) -> bool:
    """Put a saved state back on this channel; False (nothing sent) if the board cannot."""
    return link.recovering("could not restore the board's state", "state restore",
                           lambda: _restore(link, measured, blob))


def _limit(link: Link) -> int:
    return min(link.settings.max_payload, link._hello_now().max_payload)


def _save(link: Link) -> tuple[int, bytes] | None:
    if not has_state(link):
        return None
    per = _limit(link) - SaveReply.S.size
    first = SaveReply.unpack(link._exchange(Save(0, per)).payload)
    blob = bytearray(first.data)
    while len(blob) < first.total:
        r = SaveReply.unpack(link._exchange(Save(len(blob), per)).payload)
        same = (r.measured, r.total, r.blob_crc) == (first.measured, first.total, first.blob_crc)
        if not same or r.offset != len(blob) or not r.data:
            raise Restart(f"SAVE reply at {r.offset} of another state or empty")
        blob += r.data
    if len(blob) != first.total or crc32(blob) != first.blob_crc:
        raise Restart("the saved state does not match its CRC")
    return first.measured, bytes(blob)


def _restore(link: Link, measured: int, blob: bytes) -> bool:
    if not has_state(link):
        return False
    per, total, blob_crc = _limit(link) - Restore.S.size, len(blob), crc32(blob)
    reply = None
    for off in range(0, max(total, 1), per):
        chunk = blob[off : off + per]
        reply = RestoreReply.unpack(
            link._exchange(Restore(measured, total, blob_crc, off, chunk)).payload)
        if reply.filled < off + len(chunk):
            raise Restart(f"RESTORE reply filled {reply.filled} of {off + len(chunk)}")
    if reply is None or not reply.applied or reply.measured != measured:
        raise Restart("the board did not apply the restored state")
    link.counts_from(measured)
    return True

