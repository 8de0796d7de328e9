"""The ``view`` command line, for scripts: ``ssh bastion view VIEW NAMESPACE/POD``. Pure.

    view processes|env|files|sockets|logs NAMESPACE/POD [-c CONTAINER] [--cluster NAME]
         [--path DIR] [--image REF] [--reason TEXT]

Parsed strictly like ``debug`` (:mod:`bastion.debug_command`); the answer is the view's table
as tab-separated lines with a header, every cell already neutralised (a tab in a cell is
shown as ``?``, so columns cannot be forged).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from bastion.debug_command import MAX_COMMAND, target_names
from bastion.introspect.views import VIEW_SCOPES, ViewTable
from bastion.policy import Scope
from bastion.terminal_text import printable

__all__ = ["VIEW_USAGE", "ViewCommand", "format_table", "parse_view_command"]

VIEW_USAGE = (
    "usage: view processes|env|files|sockets|logs NAMESPACE/POD [-c CONTAINER] "
    "[--cluster NAME] [--path DIR] [--image REF] [--reason TEXT]"
)
_OPTIONS = ("-c", "--container", "--cluster", "--path", "--image", "--reason")


@dataclass(frozen=True)
class ViewCommand:
    view: Scope
    namespace: str
    pod: str
    container: str = ""
    cluster: str = ""
    path: str = ""
    image: str = ""
    reason: str = ""


def parse_view_command(text: str) -> ViewCommand:
    """Parse ``view ...``; ValueError with what was wrong and the usage line."""
    if len(text) > MAX_COMMAND:
        raise ValueError(f"the command is longer than {MAX_COMMAND} characters")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(
            f"the command could not be split into words ({exc}); {VIEW_USAGE}"
        ) from None
    if not words or words[0] != "view":
        raise ValueError(f"not a view command; {VIEW_USAGE}")
    positional: list[str] = []
    options: dict[str, str] = {}
    rest = iter(words[1:])
    for word in rest:
        if word in _OPTIONS:
            value = next(rest, None)
            if value is None:
                raise ValueError(f"{word} needs a value; {VIEW_USAGE}")
            key = "--container" if word == "-c" else word
            if key in options:
                raise ValueError(f"{word} is given twice")
            options[key] = value
        elif word.startswith("-"):
            raise ValueError(f"unknown option {printable(word[:40])!r}; {VIEW_USAGE}")
        else:
            positional.append(word)
    if len(positional) != 2:
        raise ValueError(f"name a view and one pod; {VIEW_USAGE}")
    name, target = positional
    views = ", ".join(s.value for s in VIEW_SCOPES)
    try:
        view = Scope(name)
    except ValueError:
        raise ValueError(f"{printable(name[:40])!r} is not a view; use one of {views}") from None
    if view not in VIEW_SCOPES:
        raise ValueError(f"{view.value!r} is not a view (use debug for a shell); views: {views}")
    namespace, pod, container, cluster = target_names(target, options, "NAMESPACE/POD")
    return ViewCommand(
        view=view,
        namespace=namespace,
        pod=pod,
        container=container,
        cluster=cluster,
        path=options.get("--path", ""),
        image=options.get("--image", ""),
        reason=options.get("--reason", ""),
    )


def format_table(table: ViewTable) -> str:
    """Tab-separated lines, header first; a last line says when rows were cut."""
    lines = ["\t".join(table.columns)]
    lines.extend("\t".join(printable(cell) for cell in row) for row in table.rows)
    if table.truncated:
        lines.append(f"# truncated: only the first {len(table.rows)} rows are shown")
    if table.note:
        lines.append(f"# {printable(table.note)}")
    return "\n".join(lines) + "\n"
