"""``nicos-client``: the command-line client of the daemon.

Modules, one concern each:

- ``main``: argument parsing, target resolution, password, the entry point;
- ``profiles``: connection profiles and the client's config/state directories;
- ``session``: the client subclass that follows the daemon's state, turns events
  into terminal output and reconnects by itself;
- ``render``: formatting of messages, announcements and JSON lines;
- ``interactive``: the prompt (prompt_toolkit), key bindings, Ctrl-C handling;
- ``commands``: the slash commands of the interactive mode;
- ``completion``: tab completion (slash commands, files, daemon names);
- ``batch``: non-interactive use (``-c``, ``run FILE``, ``--json``).
"""
