"""Games a zone runs (docs/rules.md): the API (api.py), movement (motion.py), loading a
game by name (loading.py), and the built-in ones: walking (walk.py) and the shooter
(shooter/, the default)."""
