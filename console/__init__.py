"""The operator console (docs/operations.md, "The console"): who is an operator, what an
operator may see and do to the world (zones, their players, kicks, rescues, accounts),
and how every api process learns of it. Its HTTP routes (server/http/admin.py) and the
WebSocket edge call it."""
