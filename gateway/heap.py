"""Keeping the long-lived heap out of the cyclic garbage collector's full passes.

Everything loaded at startup lives as long as the process: the apps, the
table, the metric children. `gc.freeze()` moves it out of the collector's
reach, which otherwise walks it every few seconds (docs/benchmarks.md rows 1
and 4). A table built by a reload lives as long, but it was not there when
startup froze the heap: it is frozen too, once the reloads have settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

# How long after a swap the heap is frozen again (see HeapFreezer.refreeze_soon).
REFREEZE_DELAY = 2.0


class HeapFreezer:
    def __init__(self, parsing: asyncio.Lock) -> None:
        # Held while a table's text is parsed: its tree, frozen half-built, would
        # never be collected (it holds reference cycles).
        self._parsing = parsing
        self._frozen = False
        self._task: asyncio.Task[None] | None = None

    def freeze(self) -> None:
        gc.collect()
        gc.freeze()
        self._frozen = True

    def refreeze_soon(self) -> None:
        """Freeze a new table with the rest of the heap; a burst of swaps refreezes
        once, after the last."""
        if not self._frozen:
            return
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.create_task(self._refreeze_after(REFREEZE_DELAY))

    async def _refreeze_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._parsing:
            # Collect what is not frozen (the reload's garbage) and freeze the rest.
            # Not unfreezing first keeps the pause to the new objects (tens of ms
            # for a 10,000-route table, not the whole heap's ~0.5 s); the old table
            # is freed by reference counting as its last request ends, frozen or not.
            gc.collect()
            gc.freeze()
        self._task = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
