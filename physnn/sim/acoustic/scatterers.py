"""Rigid scatterers: the seeded default layout and the free places a sudden change may use."""

from __future__ import annotations

import math

import torch

from .config import AcousticConfig


def _near_transducers(cfg: AcousticConfig) -> torch.Tensor:
    """Cells within a margin of a speaker, microphone or membrane (kept free of scatterers)."""
    h, w = cfg.grid
    busy = torch.zeros(h, w, dtype=torch.bool)
    for pts in cfg.transducers.values():
        for r, col in pts:
            r0, c0 = int(math.floor(r)), int(math.floor(col))
            busy[max(r0 - 1, 0) : r0 + 3, max(c0 - 1, 0) : c0 + 3] = True
    return busy


def draw_scatterers(cfg: AcousticConfig) -> list[list[int]]:
    """``n_scatterers`` seeded 1-3 cell blocks, a cell apart and clear of the transducers."""
    h, w = cfg.grid
    keep_free = _near_transducers(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    cells: set[tuple[int, int]] = set()
    placed, tries = 0, 0
    while placed < cfg.n_scatterers and tries < 100 * (cfg.n_scatterers + 1):
        tries += 1
        sh, sw = (int(v) for v in torch.randint(1, 4, (2,), generator=g))
        r = int(torch.randint(1, max(h - sh, 2), (1,), generator=g))
        col = int(torch.randint(1, max(w - sw, 2), (1,), generator=g))
        block = keep_free[r : r + sh, col : col + sw]
        if block.numel() == sh * sw and not block.any():
            cells.update((r + i, col + j) for i in range(sh) for j in range(sw))
            keep_free[max(r - 1, 0) : r + sh + 1, max(col - 1, 0) : col + sw + 1] = True
            placed += 1
    return [list(c) for c in sorted(cells)]


def scatterer_blocks(cells: list[list[int]]) -> list[list[list[int]]]:
    """Connected (4-neighbour) groups of scatterer cells: the rigid objects."""
    left = {(c[0], c[1]) for c in cells}
    blocks = []
    while left:
        todo, block = [left.pop()], []
        while todo:
            r, col = todo.pop()
            block.append([r, col])
            for nb in ((r + 1, col), (r - 1, col), (r, col + 1), (r, col - 1)):
                if nb in left:
                    left.remove(nb)
                    todo.append(nb)
        blocks.append(sorted(block))
    return sorted(blocks)


def _occupied(cfg: AcousticConfig, cells: list[list[int]]) -> torch.Tensor:
    """Cells a new scatterer must avoid: transducers and membranes (with a margin) and
    the current scatterers (with a one-cell gap)."""
    busy = _near_transducers(cfg)
    for r, col in cells:
        busy[max(r - 1, 0) : r + 2, max(col - 1, 0) : col + 2] = True
    return busy


def place_block(
    cfg: AcousticConfig, cells: list[list[int]], shape: tuple[int, int], gen: torch.Generator
) -> list[list[int]] | None:
    """Cells of a free, seeded place for a ``shape`` block among ``cells``; None if none is found."""
    h, w = cfg.grid
    busy = _occupied(cfg, cells)
    sh, sw = shape
    for _ in range(1000):
        r = int(torch.randint(0, h - sh + 1, (1,), generator=gen))
        col = int(torch.randint(0, w - sw + 1, (1,), generator=gen))
        if not busy[r : r + sh, col : col + sw].any():
            return [[r + i, col + j] for i in range(sh) for j in range(sw)]
    return None
