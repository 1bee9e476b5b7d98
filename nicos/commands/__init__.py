"""User commands: functions marked with ``@usercommand`` that the session
exports to the script namespace.

Modules: ``basic`` (sleep, messages, help), ``device`` (move, maw, wait,
read, status, stop, reset, adjust), ``setups`` (NewSetup, AddSetup,
RemoveSetup, ListSetups).  A facility adds its own module and names it in a
setup's ``modules`` list.
"""
