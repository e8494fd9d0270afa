"""One module per `moesd` subcommand: each `run(...)` does the work and returns the text to print."""
