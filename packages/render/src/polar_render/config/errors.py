"""The error of a malformed scene file (leaf module: every config reader and checker raises it)."""


class SceneConfigError(ValueError):
    """A scene file is malformed; the message names the file and the key."""
