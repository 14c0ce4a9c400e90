"""Errors raised by ``security``: one root, one subclass per failure mode."""

from __future__ import annotations

__all__ = ["SecurityError", "KeyRingError", "EnvelopeError", "UnknownKeyError", "InvalidTagError",
           "TruncatedError", "VersionError", "SignatureError"]


class SecurityError(Exception):
    """Root of every error raised by ``security``."""


class KeyRingError(SecurityError):
    """Keys could not be loaded, parsed or used (bad format, unsafe file permissions, no active key)."""


class EnvelopeError(SecurityError):
    """An envelope could not be opened."""


class UnknownKeyError(EnvelopeError):
    """The envelope names a key id this key ring does not hold."""


class InvalidTagError(EnvelopeError):
    """Authentication failed: wrong key, tampered bytes, or wrong topic / message key / schema."""


class TruncatedError(EnvelopeError):
    """The envelope is shorter than its header says."""


class VersionError(EnvelopeError):
    """The envelope's format version is not supported."""


class SignatureError(SecurityError):
    """A webhook signature is missing, malformed, stale or wrong."""
