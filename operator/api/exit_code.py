"""Exit codes every `negrl` command uses, so that Kubernetes (a Job's podFailurePolicy) and scripts
can tell a retryable failure from one that no retry can fix."""

OK = 0
FAILURE = 1        # the stage failed while running (a crash, a lost server): a retry may succeed
USAGE = 2          # bad command line (argparse's own code)
CONFIG_ERROR = 3   # the stage config or manifest is invalid: no retry can fix it
INPUT_ERROR = 4    # a path the command reads is missing or unreadable
INTERRUPTED = 130  # stopped by SIGINT/SIGTERM


class ConfigError(ValueError):
    """An invalid stage config, manifest or tracking setting: the command exits with CONFIG_ERROR."""
