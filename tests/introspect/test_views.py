"""The views' fixed commands and their parsers, on real output of the tools."""

from __future__ import annotations

import subprocess

import pytest

from bastion.introspect.views import (
    MAX_ROWS,
    TARGET_ROOT,
    command_for,
    parse_files,
    parse_logs,
    parse_processes,
    parse_sockets,
)
from bastion.policy import Scope


def test_commands_are_constants_and_the_path_is_one_element() -> None:
    assert command_for(Scope.PROCESSES) == ("ps", "-e", "-o", "pid,ppid,user,etime,args")
    argv = command_for(Scope.FILES, "/etc/a b; rm -rf /")
    assert argv[:-1] == ("ls", "-l", "-n", "-A", "--")
    assert argv[-1] == TARGET_ROOT + "/etc/a b; rm -rf /"
    with pytest.raises(ValueError, match="absolute"):
        command_for(Scope.FILES, "-la")
    with pytest.raises(ValueError, match="runs no command"):
        command_for(Scope.SHELL)
    with pytest.raises(ValueError, match="runs no command"):
        command_for(Scope.LOGS)


BUSYBOX_PS = """PID   PPID  USER     ELAPSED COMMAND
    1     0 65532     1:02:03 /app/server --db-password=hunter2hunter2 --port 8080
   17     1 65532       00:05 sh -c \x1b]0;pwned\x07echo
"""


def test_processes_parse_busybox_output_redacted_and_neutralised() -> None:
    rows, truncated = parse_processes(BUSYBOX_PS)
    assert not truncated
    assert rows[0] == (
        "1",
        "0",
        "65532",
        "1:02:03",
        "/app/server --db-password=[REDACTED:assignment] --port 8080",
    )
    assert rows[1][4] == "sh -c ?]0;pwned?echo"


def test_processes_parse_this_machines_ps() -> None:
    output = subprocess.run(
        list(command_for(Scope.PROCESSES)), capture_output=True, text=True, check=True
    ).stdout
    rows, _ = parse_processes(output)
    assert any(row[0] == "1" for row in rows)
    assert all(row[0].isdigit() and row[1].isdigit() for row in rows)


def test_sockets_keep_listening_and_established() -> None:
    output = (
        "tcp   LISTEN 0      4096   0.0.0.0:8080   0.0.0.0:*\n"
        "tcp   ESTAB  0      0      10.0.0.5:8080  10.0.0.9:51234\n"
        "tcp   TIME-WAIT 0   0      10.0.0.5:8080  10.0.0.9:51000\n"
        "udp   UNCONN 0      0      0.0.0.0:53     0.0.0.0:*\n"
    )
    rows, _ = parse_sockets(output)
    assert rows == (
        ("tcp", "listening", "0.0.0.0:8080", "0.0.0.0:*", "0", "4096"),
        ("tcp", "established", "10.0.0.5:8080", "10.0.0.9:51234", "0", "0"),
        ("udp", "listening", "0.0.0.0:53", "0.0.0.0:*", "0", "0"),
    )


def test_files_parse_metadata_including_devices_links_and_spaces() -> None:
    output = (
        "total 8\n"
        "-rw-r--r--    1 0        0              1234 Nov 29 12:00 nginx.conf\n"
        "drwxr-xr-x    2 101      101             4096 Jan  3  2025 conf.d\n"
        "crw-rw-rw-    1 0        0           1,   3 Nov 29 12:00 null\n"
        "lrwxrwxrwx    1 0        0                11 Nov 29 12:00 current -> /etc/a b\n"
        "-rw-------    1 0        0                 1 Nov 29 12:00 with space \x1b[31m\n"
    )
    rows, _ = parse_files(output)
    assert rows == (
        ("-rw-r--r--", "0", "0", "1234", "Nov 29 12:00", "nginx.conf"),
        ("drwxr-xr-x", "101", "101", "4096", "Jan  3  2025", "conf.d"),
        ("crw-rw-rw-", "0", "0", "1,3", "Nov 29 12:00", "null"),
        ("lrwxrwxrwx", "0", "0", "11", "Nov 29 12:00", "current -> /etc/a b"),
        ("-rw-------", "0", "0", "1", "Nov 29 12:00", "with space ?[31m"),
    )


def test_files_parse_this_machines_ls() -> None:
    argv = ["ls", "-l", "-n", "-A", "--", "/etc"]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rows, _ = parse_files(output)
    assert any(row[5] == "passwd" for row in rows)


def test_logs_are_redacted_and_the_last_lines_kept() -> None:
    text = "\n".join(f"line {i}" for i in range(MAX_ROWS + 5)) + "\ntoken=abcdef123456\n"
    rows, redactions, truncated = parse_logs(text)
    assert truncated
    assert len(rows) == MAX_ROWS
    assert rows[-1] == ("token=[REDACTED:assignment]",)
    assert redactions == 1


def test_rows_stop_at_the_limit() -> None:
    output = "\n".join(f"tcp LISTEN 0 1 0.0.0.0:{i} 0.0.0.0:*" for i in range(MAX_ROWS + 1))
    rows, truncated = parse_sockets(output)
    assert truncated
    assert len(rows) == MAX_ROWS
