"""What a service refuses, by kind: the HTTP layer turns each kind into its status code, the CLI into a message.

Services (``ivr/<feature>/service.py`` and friends) raise these instead of returning HTTP answers, so they know
nothing of aiohttp; ``ivr/api/app.py``'s middleware maps ``NotFound`` to 404, ``Invalid`` to 400, ``Conflict`` to
409 and ``Unavailable`` to 503, with the message as the error text.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request a service will not carry out; ``str(exc)`` says why, for the person who asked."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Invalid(ServiceError):
    """The request is wrong (a field, a parameter)."""
    status = 400


class NotFound(ServiceError):
    """What the request names does not exist."""
    status = 404


class Conflict(ServiceError):
    """The request is right but the state of things refuses it now."""
    status = 409


class Unavailable(ServiceError):
    """A collaborator (Asterisk, the SIP provisioning) could not do its part: try again later."""
    status = 503
