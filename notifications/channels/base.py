"""The channel interface: send one message (title, body, a link back to the portal) to one address."""


class ChannelError(Exception):
    """The channel refused or could not be reached; `permanent` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message, self.permanent = message, permanent


class Channel:
    kind = ""

    @classmethod
    def address_error(cls, address: str) -> str | None:
        """Return what is wrong with an address of this channel (for the catalog), or None."""
        return None

    def send(self, address: str, *, title: str, body: str, link: str) -> None:
        raise NotImplementedError
