"""Fails loudly when an asyncssh upgrade moves a private name that bastion.ssh.asyncssh_ext
uses. If this fails, do not widen the pinned range: re-read asyncssh's auth.py,
connection.py and channel.py, port the extension, and update this test with it."""

from __future__ import annotations

import inspect

import asyncssh
from asyncssh import auth, channel, connection
from asyncssh.constants import MSG_SERVICE_REQUEST

from bastion.ssh import asyncssh_ext

TESTED_VERSIONS = ("2.24.1",)


def test_asyncssh_is_a_tested_version() -> None:
    assert asyncssh.__version__ in TESTED_VERSIONS, (
        f"asyncssh {asyncssh.__version__} is not one this extension was checked against"
    )


def test_the_publickey_handler_is_replaced_for_servers_only() -> None:
    asyncssh_ext.install()
    assert auth._server_auth_handlers[b"publickey"] is asyncssh_ext.PublicKeyFirstFactor
    assert b"publickey" in auth._auth_methods
    assert auth._client_auth_handlers[b"publickey"].__name__ == "_ClientPublicKeyAuth"


def test_the_server_auth_base_still_has_what_the_handler_calls() -> None:
    base = auth.ServerAuth
    assert "partial_success" in inspect.signature(base.send_failure).parameters
    assert inspect.iscoroutinefunction(base.send_success)
    init = inspect.getsource(base.__init__)
    assert "self._username = username" in init
    assert "self._start(packet)" in init
    assert auth.MSG_USERAUTH_PK_OK == 60
    # The original handler's body must still parse the request as ours does.
    original = inspect.getsource(auth._ServerPublicKeyAuth._start)
    for step in (
        "packet.get_boolean()",
        "packet.get_string()",
        "packet.get_consumed_payload()",
        "self._conn.validate_public_key(self._username, key_data",
    ):
        assert step in original, f"asyncssh's publickey handler no longer does {step}"


def test_the_connection_still_tracks_auth_as_the_extension_reads_it() -> None:
    source = inspect.getsource(connection.SSHConnection._process_service_request)
    for name in ("self._next_service", "self._auth_in_progress"):
        assert name in source
    success = inspect.getsource(connection.SSHConnection.send_userauth_success)
    assert "self._auth_complete = True" in success
    assert "get_supported_server_auth_methods" in inspect.getsource(
        connection.SSHConnection.send_userauth_failure
    )
    asyncssh_ext.install()
    handler = connection.SSHServerConnection._packet_handlers[MSG_SERVICE_REQUEST]
    assert getattr(handler, "__bastion_ext__", False)
    client_handler = connection.SSHClientConnection._packet_handlers[MSG_SERVICE_REQUEST]
    assert not getattr(client_handler, "__bastion_ext__", False)


def test_channel_requests_still_pass_through_one_dispatcher() -> None:
    source = inspect.getsource(channel.SSHChannel._service_next_request)
    assert "self._request_queue[0]" in source
    assert "'_process_' + map_handler_name(request) + '_request'" in source
    assert "def _report_response" in inspect.getsource(channel.SSHChannel)
    asyncssh_ext.install()
    assert getattr(channel.SSHServerChannel._service_next_request, "__bastion_ext__", False)
    assert not getattr(channel.SSHClientChannel._service_next_request, "__bastion_ext__", False)


def test_install_is_idempotent() -> None:
    asyncssh_ext.install()
    before = channel.SSHServerChannel._service_next_request
    handlers = connection.SSHServerConnection._packet_handlers
    asyncssh_ext.install()
    assert channel.SSHServerChannel._service_next_request is before
    assert connection.SSHServerConnection._packet_handlers is handlers


def test_the_listener_hook_and_extra_info_the_proxy_listener_relies_on() -> None:
    # bastion.ssh.proxied_listener: asyncssh.listen(tunnel=obj) opens its listener with
    # obj.create_server(factory, host, port), and an SSH connection's own extra info (the
    # PROXY header's source, set before connection_made) wins over the socket's peername.
    listen = inspect.getsource(connection._listen)
    assert "await tunnel.create_server(tunnel_factory, host, port)" in listen
    assert "return cast(SSHTCPSession, conn_factory())" in listen
    extra = inspect.getsource(connection.SSHConnection.get_extra_info)
    assert "self._extra.get(name," in extra
    made = inspect.getsource(connection.SSHConnection.connection_made)
    assert "self._extra" not in made  # connection_made must not reset it
