"""The console app and its entry point.

    python -m tui USER          (or python -m tui.app USER, as the worker starts it fresh)

The app talks only to the session broker, over the socket named by ``BASTION_BROKER_FD``
(:mod:`tui.broker`). It starts with the broker's ``Welcome`` and exits with status 0 when
the broker hands the terminal to a debug shell (``Handover``), or when the operator quits.
Nothing here runs at import time: the console template forks it from a warm process and
calls :func:`main`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import termios
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import App
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.css.model import RuleSet

from bastion.console_protocol import (
    BROKER_FD_ENV,
    AwaitsApproval,
    DeadlinesChanged,
    DebugEnded,
    DebugProgress,
    DebugRefused,
    Failed,
    Handover,
    Message,
    Notice,
    NoticeItem,
    NoticesChanged,
    Welcome,
)
from tui.approvals import (
    POLL_EVERY,
    ApprovalBoard,
    ApprovalsScreen,
    AwaitingApprovalScreen,
    decide,
    refresh,
)
from tui.banners import banner_text
from tui.broker import BrokerClient, BrokerGone, SocketTransport, Transport
from tui.debug_screens import DebugProgressScreen
from tui.oversight import SessionsScreen
from tui.safe_text import clean
from tui.screens import ClustersScreen, HelpScreen, NamespacesScreen, PodScreen, PodsScreen
from tui.session_bar import SessionBar, session_line

__all__ = ["KEYS", "ConsoleApp", "main"]

KEYS: list[tuple[str, str, str]] = [
    ("everywhere", "?", "show these keys"),
    ("everywhere", "q / ctrl+c", "end the session"),
    ("everywhere", "escape", "back (on the pod list: clear the filter first)"),
    ("everywhere", "a", "approval requests: yours, and those you may approve or deny"),
    ("lists", "up/down j/k", "move"),
    ("lists", "enter", "open"),
    ("namespaces", "h", "show what policy hides, and why"),
    ("pods", "/", "filter: text, /regex/, -l key=value,key2!=v"),
    ("pods", "pgup/pgdn", "page up, page down"),
    ("pods", "g / G", "first, last pod"),
    ("pods", "N R S T A O", "sort by name, ready, status, restarts, age, node (again: reverse)"),
    ("pods", "h", "show how many pods policy hides, and why"),
    ("pod", "up/down", "choose a container"),
    ("pod", "d", "debug the container (asks for confirmation)"),
    ("pod", "r", "reload the details"),
    ("pod", "p e f s l", "read-only views your grant allows: processes, env, files, sockets, logs"),
    ("confirmation", "ctrl+d / enter", "start the debug shell"),
    ("confirmation", "escape", "cancel"),
    ("approvals", "y / n", "approve / deny the request (asks for a reason)"),
    ("approvals", "enter", "follow your own request; when approved, start its debug shell"),
]
# Shown to auditors only, as their key is.
AUDITOR_KEYS: list[tuple[str, str, str]] = [
    ("everywhere", "o", "live sessions; enter watches one, read-only as recorded"),
]
KEYS += AUDITOR_KEYS


_ParsedCss = tuple[dict[str, str], LRUCache[tuple[Any, ...], list[RuleSet]]]


class ConsoleApp(App[int]):
    # Inline rather than a .tcss file: nothing but Python needs packaging. Content is built
    # from rich Text, never from markup.
    CSS = """
    .title { height: 1; }
    #clusters, #namespaces { height: 1fr; }
    #filter { height: 3; }
    #pods { height: 1fr; }
    #status { height: 1; background: $panel; }
    .hidden-panel { height: auto; max-height: 8; border-top: solid $warning; }
    #containers { height: auto; max-height: 6; }
    #pod-body { height: 1fr; }
    #view-table { height: 1fr; }
    #confirm, #progress, #help {
        width: 90%;
        max-width: 100;
        height: auto;
        max-height: 90%;
        border: thick $warning;
        background: $surface;
        padding: 0 1;
    }
    DebugConfirmation, DebugProgressScreen, HelpScreen, PathQuestion { align: center middle; }
    #confirm Button { margin: 1 1 0 0; }
    #confirm-error { height: auto; }
    """
    TITLE = "bastion"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_session", "Quit"),
        Binding("question_mark", "help", "Keys"),
        Binding("a", "approvals", "Approvals"),
        Binding("o", "oversight", "Sessions"),
    ]

    # The CSS a console of this process parsed, kept by keep_parsed_css() with the theme
    # variables it was parsed with.
    _parsed_css: ClassVar[_ParsedCss | None] = None

    def __init__(
        self,
        user: str,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.time,
        fixed_now: float | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        kept = ConsoleApp._parsed_css
        # Textual parses every widget's CSS again for each App (its cache is per stylesheet):
        # a console forked from the template reuses the rules the template parsed instead
        # (bench/README.md, "Console start"). Only with the same variables: they are baked
        # into the rules. Textual clears this cache itself when the variables change.
        if kept is not None and kept[0] == self.stylesheet._variables:
            self.stylesheet._parse_cache = kept[1]
        self.user = user
        self.broker = BrokerClient(transport, on_event=self._event, on_gone=self._gone)
        if timeout is not None:
            self.broker.timeout = timeout
        self.clock = clock
        self.fixed_now = fixed_now  # pins pods' ages in snapshots
        self.welcome = Welcome(user, [], [], 0.0, 0.0)
        self.where = ""
        self.last_input = clock()
        self.debugging: DebugProgressScreen | None = None
        self.ended: DebugEnded | None = None
        self.board = ApprovalBoard()
        self.notices: list[NoticeItem] = []  # banners under the top line (break-glass)

    def keep_parsed_css(self) -> None:
        """Consoles created after this one in this process reuse the CSS it parsed (the
        console template calls this after its warm-up run, before it forks consoles)."""
        ConsoleApp._parsed_css = (dict(self.stylesheet._variables), self.stylesheet._parse_cache)

    async def on_mount(self) -> None:
        try:
            self.welcome = await self.broker.start()
            await self.broker.watch_notices()
        except BrokerGone as exc:
            self.exit(return_code=1, message=str(exc))
            return
        self.refresh_bindings()  # the auditors' key shows once the broker said who this is
        self.set_interval(1.0, self.update_bar)
        self.set_interval(POLL_EVERY, self.poll_approvals)
        if len(self.welcome.clusters) == 1:  # Escape there makes the clusters list
            await self.push_screen(NamespacesScreen(self.welcome.clusters[0]))
        else:
            await self.push_screen(ClustersScreen())
        await self._back_to()  # the broker tells a console started after a shell how it ended

    async def on_unmount(self) -> None:
        await self.broker.close()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown):
            self.last_input = self.clock()  # the broker's idle clock counts the same keys
        await super().on_event(event)

    # ------------------------------------------------------------------ header
    def bar_text(self, where: str | None = None) -> Text:
        """The top line now (for ``where``, by default where the console is), with the
        banners under it."""
        now = self.clock()
        idle = self.welcome.idle_timeout
        line = session_line(
            self.welcome.user or self.user,
            self.where if where is None else where,
            self.welcome.hard_deadline - now,
            idle - (now - self.last_input) if idle else None,
            self.board.to_decide,
        )
        return banner_text(line, self.notices, now)

    def update_bar(self) -> None:
        text = self.bar_text()
        for bar in self.screen.query(SessionBar):
            bar.update(text)

    # ------------------------------------------------------------------ broker events
    def _event(self, message: Message) -> None:
        match message:
            case Notice():
                self.notify(clean(message.message), severity="warning", markup=False)
            case NoticesChanged():
                self.notices = list(message.notices)
                self.update_bar()
            case DeadlinesChanged():
                self.welcome = Welcome(
                    self.welcome.user,
                    self.welcome.groups,
                    self.welcome.clusters,
                    message.hard_deadline,
                    message.idle_timeout,
                    self.welcome.auditor,
                )
                self.update_bar()
            case DebugProgress():
                if self.debugging is not None:
                    self.debugging.step(message.message)
            case DebugRefused():
                if self.debugging is not None and self.screen is self.debugging:
                    self.pop_screen()
                self.debugging = None
                self.notify(clean(message.message), severity="error", markup=False, timeout=10)
            case AwaitsApproval():
                if self.debugging is not None and self.screen is self.debugging:
                    self.pop_screen()
                self.debugging = None
                self.push_screen(AwaitingApprovalScreen(message.request_id, message.message))
            case Failed():
                # A refused watch (other requests' refusals go to their own callers).
                self.notify(clean(message.message), severity="error", markup=False, timeout=10)
            case Handover():
                # Textual restores the terminal on the way out; the broker attaches it next.
                self.exit(0)
            case DebugEnded():
                self.ended = message
                if self.screen_stack and isinstance(self.screen, NamespacesScreen | ClustersScreen):
                    self.call_later(self._back_to)

    async def _back_to(self) -> None:
        """A console started after a debug shell shows how it ended, on that pod's list.
        Once: the news may arrive while on_mount is still opening the first screens, and
        both on_mount and the event then come here."""
        ended, self.ended = self.ended, None
        if ended is None:
            return
        # The broker's message is the whole sentence (target and exit status included).
        said = clean(ended.message)
        self.notify(
            said[:1].upper() + said[1:],
            severity="information" if ended.exit_status == 0 else "warning",
            markup=False,
            timeout=15,
        )
        # The broker names a shell's target CLUSTER/NAMESPACE/POD (NAMESPACE/POD is taken
        # too, with the cluster shown); names never contain a slash.
        parts = ended.target.split("/")
        screen = self.screen
        if len(parts) not in (2, 3) or not isinstance(screen, NamespacesScreen):
            return
        cluster = parts[0] if len(parts) == 3 else screen.cluster
        namespace, pod = parts[-2:]
        if cluster == screen.cluster and namespace and pod:
            await self.push_screen(PodsScreen(cluster, namespace, select=pod))

    def _gone(self, reason: str) -> None:
        self.exit(return_code=1, message=reason)

    # ------------------------------------------------------------------ approvals
    def poll_approvals(self) -> None:
        """Ask the broker for the approval requests now (also every POLL_EVERY seconds)."""
        self.run_worker(refresh(self), group="approvals", exclusive=True)

    def send_decision(self, request_id: str, approve: bool, reason: str) -> None:
        self.run_worker(decide(self, request_id, approve, reason), group="decision")

    # ------------------------------------------------------------------ keys
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            keys = KEYS if self.welcome.auditor else [k for k in KEYS if k not in AUDITOR_KEYS]
            self.push_screen(HelpScreen(keys))

    def action_approvals(self) -> None:
        if isinstance(self.screen, PodsScreen | PodScreen | NamespacesScreen | ClustersScreen):
            self.push_screen(ApprovalsScreen())

    def action_oversight(self) -> None:
        if self.welcome.auditor and isinstance(
            self.screen, PodsScreen | PodScreen | NamespacesScreen | ClustersScreen
        ):
            self.push_screen(SessionsScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Only auditors see the sessions key, and only they can use it.
        if action == "oversight":
            return self.welcome.auditor
        return True

    def action_quit_session(self) -> None:
        if isinstance(self.screen, PodsScreen | PodScreen | NamespacesScreen | ClustersScreen):
            self.exit(0)


# Terminals that cannot position the cursor: a full-screen app would be noise on them.
DUMB_TERMINALS = frozenset({"dumb", "unknown"})
DUMB_TERMINAL = (
    "bastion: this terminal (TERM={term}) cannot show the console; connect from a terminal "
    "emulator, or open a shell directly with: ssh -t BASTION debug NAMESPACE/POD\n"
)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m tui USER\n")
        return 2
    fd = os.environ.get(BROKER_FD_ENV, "")
    if not fd.isdigit():
        sys.stderr.write("bastion: this console was started without its broker; log in again\n")
        return 1
    with contextlib.suppress(OSError):
        # Take the pty as controlling terminal (a fresh console is a session leader without
        # one; one forked from the template has it already): resizes then reach us as
        # SIGWINCH, and a hang-up as SIGHUP.
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    term = os.environ.get("TERM", "")
    if term in DUMB_TERMINALS:
        sys.stderr.write(DUMB_TERMINAL.format(term=term))
        return 1
    app = ConsoleApp(argv[0], SocketTransport(int(fd)))
    app.run()
    return app.return_code if app.return_code is not None else 1


if __name__ == "__main__":
    # ``python -m tui.app`` runs this file as ``__main__``, a second copy of the module whose
    # ConsoleApp is not the one the screens check for (tui.app.ConsoleApp): run that one.
    from tui.app import main as _main

    sys.exit(_main(sys.argv[1:]))
