"""The ``testlens`` command: the CI-side commands and the server's, in one entry point.

Each command's module is imported only when the command runs, so ``testlens upload`` in a CI
job never loads the server (FastAPI, SQLAlchemy), and a client-only install that lacks the
server's dependencies still runs every CI-side command.
"""

from __future__ import annotations

import importlib

import click

# command -> "module:attribute"
_COMMANDS = {
    "parse": "testlens.client.cli:parse",
    "upload": "testlens.client.cli:upload",
    "shard": "testlens.client.cli:shard",
    "orchestrate": "testlens.client.cli:orchestrate",
    "worker": "testlens.client.cli:worker",
    "runs": "testlens.client.cli:runs",
    "flaky": "testlens.client.cli:flaky",
    "durations": "testlens.client.cli:durations",
    "serve": "testlens.server.cli:serve",
    "db": "testlens.server.cli:db",
    "keys": "testlens.server.cli:keys",
    "github": "testlens.server.cli:github",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            return _unavailable(cmd_name, exc)
        command: click.Command = getattr(module, attribute)
        return command


def _unavailable(name: str, exc: ImportError) -> click.Command:
    """A stand-in for a command whose dependencies are not installed, saying which."""

    @click.command(name, context_settings={"ignore_unknown_options": True}, add_help_option=False)
    @click.argument("ignored", nargs=-1, type=click.UNPROCESSED)
    def command(ignored: tuple[str, ...]) -> None:
        raise click.ClickException(
            f"'testlens {name}' needs the server's dependencies ({exc.name} is missing): "
            "pip install 'testlens[server]'"
        )

    command.short_help = "(needs testlens[server])"
    return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="testlens")
def main() -> None:
    """testlens: test intelligence for CI."""
