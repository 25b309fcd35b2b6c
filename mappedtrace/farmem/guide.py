"""Graph guidance for the pager (placeholder while the loop is tested)."""
from __future__ import annotations


class Guide:
    def __init__(self, pager):
        self.pager = pager

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def describe(self) -> dict:
        return {"state": "not built"}
