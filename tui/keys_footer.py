"""The bottom line of every console screen: the keys that work here, drawn by one widget.

It looks like Textual's ``Footer`` (a key in the key colour, then its label; a key that does
nothing here dimmed) and a click on a key presses it, but it is one widget drawing a line of
text, redrawn only when the keys change. Textual's ``Footer`` makes a widget per key (with two
more nodes for its styles) and throws them all away and makes them again on every change of
the screen's bindings, several times as a screen opens: in a console forked from the template
that came to about 2.5 MB of its private memory, against the 15 MB a console may cost in all
(bench/README.md, "Console start").
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from rich.style import Style
from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widget import Widget

__all__ = ["KeysFooter", "ShownKey", "shown_keys"]


class ShownKey(NamedTuple):
    key: str  # what a click presses
    display: str  # as the app shows it: "^c", "/", "enter"
    description: str
    enabled: bool


def shown_keys(screen: Screen[object]) -> tuple[ShownKey, ...]:
    """The screen's bindings that show in a footer, one per action (the first), in order."""
    seen: set[str] = set()
    keys = []
    for _node, binding, enabled, _tooltip in screen.active_bindings.values():
        if binding.show and binding.action not in seen:
            seen.add(binding.action)
            display = screen.app.get_key_display(binding)
            keys.append(ShownKey(binding.key, display, binding.description, enabled))
    return tuple(keys)


class KeysFooter(Widget, can_focus=False):
    ALLOW_SELECT = False
    COMPONENT_CLASSES: ClassVar[set[str]] = {"keys-footer--key", "keys-footer--description"}
    DEFAULT_CSS = """
    KeysFooter {
        dock: bottom;
        height: 1;
        text-wrap: nowrap;
        text-overflow: clip;
        color: $footer-foreground;
        background: $footer-background;
        .keys-footer--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        .keys-footer--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.keys: tuple[ShownKey, ...] = ()
        self._spans: list[tuple[int, int, ShownKey]] = []  # columns of each key, for clicks

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        keys = shown_keys(screen)
        if keys != self.keys:
            self.keys = keys
            self.refresh()

    def render(self) -> Text:
        key_style = self.get_component_rich_style("keys-footer--key")
        description_style = self.get_component_rich_style("keys-footer--description")
        line = Text(no_wrap=True, overflow="crop", end="")
        self._spans = []
        for shown in self.keys:
            start = len(line)
            dim = Style(dim=not shown.enabled)  # a key that does nothing here
            if shown.description:
                line.append(f" {shown.display} ", key_style + dim)
                line.append(f"{shown.description} ", description_style + dim)
            else:
                line.append(shown.display, key_style + dim)
            self._spans.append((start, len(line), shown))
        return line

    def on_mouse_down(self, event: events.MouseDown) -> None:
        for start, end, shown in self._spans:
            if start <= event.x < end:
                if shown.enabled:
                    self.app.simulate_key(shown.key)
                else:
                    self.app.bell()
                return
