"""The footer of every console screen: Textual's, rebuilt only when the keys it shows change.

Textual's ``Footer`` throws away and rebuilds its key widgets on every change of the screen's
bindings, and these changes come several times as a screen opens (mount, focus, the broker's
answers), mostly with the same keys. Each discarded key widget is a bundle of reference cycles
(styles, message queue, signals) left for the garbage collector, and a forked console pays for
that garbage in pages copied from its template (bench/README.md, "Console start").
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer

__all__ = ["KeysFooter"]

# What the footer draws from each of the screen's bindings: key, label, action, whether it
# is shown and enabled, its tooltip (the hidden ones too: the command palette's is drawn).
_Shown = tuple[tuple[str, str, str, bool, bool, str], ...]


def shown_keys(screen: Screen[object]) -> _Shown:
    return tuple(
        (binding.key, binding.description, binding.action, binding.show, enabled, tooltip)
        for _node, binding, enabled, tooltip in screen.active_bindings.values()
    )


class KeysFooter(Footer):
    _drawn: _Shown | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        shown = shown_keys(screen)
        if shown == self._drawn:
            return
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self._drawn = shown  # Footer recomposes with them now
        super().bindings_changed(screen)
