"""Sources (frames in) and sinks (results out)."""


class Closing:
    """A context manager that calls `close()` when its with-block ends, however it ends."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
