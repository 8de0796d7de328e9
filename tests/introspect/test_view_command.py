"""The ``view`` command line and its tab-separated output."""

from __future__ import annotations

import re

import pytest

from bastion.introspect.command import ViewCommand, format_table, parse_view_command
from bastion.introspect.views import ViewTable
from bastion.policy import Scope


def test_a_full_command() -> None:
    assert parse_view_command(
        "view files shop/web-1 -c app --cluster prod --path '/etc/my app' --reason 'INC-1 why'"
    ) == ViewCommand(
        view=Scope.FILES,
        namespace="shop",
        pod="web-1",
        container="app",
        cluster="prod",
        path="/etc/my app",
        reason="INC-1 why",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("view shell shop/web-1", "'shell' is not a view (use debug for a shell)"),
        ("view root shop/web-1", "'root' is not a view; use one of processes, env"),
        ("view processes", "name a view and one pod"),
        ("view processes shop/web-1 extra", "name a view and one pod"),
        ("view processes shop/Web_1", "is not a valid pod name"),
        ("view processes shop/web-1 --privileged", "unknown option '--privileged'"),
        ("view processes shop/web-1 -c", "-c needs a value"),
        ("view processes shop/web-1 --path /a --path /b", "--path is given twice"),
        ("view processes 'shop/web-1", "could not be split into words"),
        ("debug shop/web-1", "not a view command"),
        ("view \x1b[2J shop/web-1", "'?[2J' is not a view"),
    ],
)
def test_bad_commands_say_what_was_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_view_command(text)


def test_cells_cannot_forge_columns_or_lines() -> None:
    table = ViewTable(
        "env", "t", ("NAME", "VALUE"), (("A", "x\ty\nz\x1b"),), truncated=True, note="1 redacted"
    )
    assert format_table(table) == (
        "NAME\tVALUE\nA\tx?y?z?\n# truncated: only the first 1 rows are shown\n# 1 redacted\n"
    )
