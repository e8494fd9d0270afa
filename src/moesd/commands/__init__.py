"""One module per `moesd` subcommand. Each declares `HELP`, `add_arguments(parser)` (its own flags; shared
groups come from flags.py) and `run(args) -> str` (the work; returns the text to print). Heavy imports
(torch, scipy) stay inside `run`, so `moesd --help` and the model commands start fast."""

COMMANDS = ("presets", "experts", "predict", "schedule", "import", "fit", "generate", "bench", "report", "budget",
            "train", "calibrate")
# A command whose name is a Python keyword lives in a module of another name.
MODULES = {"import": "import_results"}
