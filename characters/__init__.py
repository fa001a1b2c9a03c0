"""The character service (docs/protocol.md, "Characters"): its rules (service.py: names,
classes, the limit, the default character), its store (store.py: characters.characters),
and its events. The HTTP routes, the world's edge and the provisioning consumer call it;
the world's edge imports nothing of the HTTP package."""
