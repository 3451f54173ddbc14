"""Entry points: each parses absl flags, builds a config and calls one library function."""
