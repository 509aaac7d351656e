"""`cloudplane mcp`: the MCP tools over stdio for the account of the API key in CLOUDPLANE_API_KEY, run in this
process against the database `serve` uses, with a workflow engine of its own so the actions it accepts progress."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from mcp.server.mcpserver import Context
from starlette.concurrency import run_in_threadpool

from cloudplane.config import Settings
from cloudplane.core import Core
from cloudplane.domain.errors import CloudplaneError
from cloudplane.mcp.server import Caller, build_server
from cloudplane.observability import configure_logging
from cloudplane.services.accounts import authenticate_api_key
from cloudplane.workflows import engine

log = logging.getLogger(__name__)
API_KEY_VARIABLE = "CLOUDPLANE_API_KEY"


class StartError(Exception):
    """Why the server cannot start (said on stderr: stdout carries the protocol)."""


def executor_settings(settings: Settings) -> Settings:
    """This process's own executor id unless one is configured: the default (host and port) is `serve`'s on this
    host, and two live processes must never share one. A process that ends leaves its unfinished operations to the
    dispatchers' takeover."""
    if settings.executor_id:
        return settings
    return settings.model_copy(update={"executor_id": f"{socket.gethostname()}:mcp-{os.getpid()}"})


def prepare_core(settings: Settings, api_key: str | None) -> tuple[Core, str]:
    from cloudplane.app import prepare

    if not api_key:
        raise StartError(
            f"{API_KEY_VARIABLE} is not set: create a key (cloudplane admin create-key --email you@example.com) and "
            f"start the server with {API_KEY_VARIABLE}=<key> in its environment"
        )
    core = Core.build(executor_settings(settings))
    prepare(core)  # a bootstrap key made here could not be this key: it is refused below like any unknown key
    try:
        authenticate_api_key(core.db, api_key)
    except CloudplaneError as e:
        core.db.dispose()
        raise StartError(f"{API_KEY_VARIABLE}: {e.message}") from None
    return core, api_key


async def serve(core: Core, api_key: str) -> None:
    async def identify(ctx: Context) -> Caller:
        # Again on each call (cached for seconds): a key revoked or an account suspended stops working here too.
        return Caller(core=core, principal=await run_in_threadpool(authenticate_api_key, core.db, api_key))

    engine.configure(core)
    engine.launch()  # on this loop, beside the protocol
    try:
        await build_server(identify).run_stdio_async()
    finally:
        await engine.ashutdown()


def run(settings: Settings, api_key: str | None) -> None:
    configure_logging(settings.log_level, settings.log_format)  # to stderr
    core, key = prepare_core(settings, api_key)
    try:
        asyncio.run(serve(core, key))
    finally:
        core.db.dispose()
