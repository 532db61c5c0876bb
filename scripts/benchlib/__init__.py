"""scripts/bench's modules: the shared helpers (common, context, vm, images, process, timeline,
stats), the scenario registry and scenarios (registry, scenarios/), and the report writer (report).
scripts/bench itself parses the command line and drives the run."""
