"""Games written on the rules API alone, as a studio would write its own (docs/rules.md):
each imports nothing of Outpost but `rules`."""
