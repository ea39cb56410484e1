"""Exceptions raised while reading or writing images, manifests and bootfs blobs."""


class ImageError(Exception):
    """An image, or something an image is assembled from, is unusable."""


class ManifestError(ImageError):
    """A manifest line is malformed or names a host file that cannot be used.

    The message starts with ``<file>:<line>:`` so a user can go straight to it.
    """


class BootfsError(ImageError):
    """A bootfs blob cannot be written or is malformed."""


class SizeError(ImageError, ValueError):
    """A size written by a user (``512M``, ``2G``) cannot be understood."""
