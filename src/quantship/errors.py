"""User-facing errors: one line that names what is wrong and how to fix it.

The CLI turns any `QuantshipError` into that line on stderr and its exit code, so
library code raises instead of printing or calling sys.exit.
"""


class QuantshipError(Exception):
    """A problem the user can fix; `exit_code` 2 means bad input or environment."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class InputError(QuantshipError):
    """Bad input: wrong path, corrupt file, invalid option (exit 2)."""


class GateFailed(QuantshipError):
    """A quality gate failed: the variant must not ship (exit 1)."""

    exit_code = 1


class NotAvailable(QuantshipError):
    """A stage or backend that this installation cannot run (exit 2)."""
