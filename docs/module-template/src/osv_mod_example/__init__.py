"""Example osv module: every image that includes it gets a message of the day."""

from pathlib import Path

from osv import hookimpl

MOTD_PATH = "/etc/motd"
MOTD_SOURCE = Path(__file__).resolve().parent / "motd"


@hookimpl
def osv_image_files(config):
    """Put the packaged message of the day at /etc/motd in the image."""
    return [(MOTD_PATH, MOTD_SOURCE)]
