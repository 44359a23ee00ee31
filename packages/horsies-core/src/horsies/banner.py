"""The start-up banner printed by `horsies worker` and `horsies scheduler`.

Cosmetic: the content (app, role, queue mode, queues, masked broker URL, cluster cap, registered
tasks) is what matters; the layout may change.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

from horsies.config import QueueMode
from horsies.logs import escape_controls

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = ["TAGLINE", "horsies_version", "render_banner"]

TAGLINE = "distributed task queue and workflow engine"

_ART = (
    r"       _____/\ ",
    r"      / o     \__",
    r"     /   ___     \  ",
    r"    /___/   \_____\ ",
    r"        |  |  |  |  ",
)


def horsies_version() -> str:
    """Installed version of horsies-core (`"unknown"` when running from an uninstalled tree)."""
    try:
        return metadata.version("horsies-core")
    except metadata.PackageNotFoundError:
        return "unknown"


def render_banner(app: Horsies, role: str | None = None) -> str:
    """Text of the start-up banner for `app` acting as `role` (default: the app's role).

    The broker URL is shown with its password masked. Ends without a trailing newline.
    """
    config = app.config
    shown_role = role if role is not None else app.role
    title = (f"horsies v{horsies_version()}", TAGLINE)
    width = max(len(art.rstrip()) for art in _ART)
    lines = [
        f"{art.rstrip():<{width}}   {title[index]}" if index < len(title) else art.rstrip()
        for index, art in enumerate(_ART)
    ]
    lines.append("")
    mode = "CUSTOM" if config.queue_mode is QueueMode.CUSTOM else "DEFAULT"
    lines.extend(
        [
            "[config]",
            f"  .> app:         {type(app).__name__}",
            f"  .> role:        {shown_role}",
            f"  .> queue_mode:  {mode}",
            f"  .> queues:      {', '.join(app.get_valid_queue_names())}",
            f"  .> broker:      {config.broker.masked_url}",
        ]
    )
    if config.cluster_wide_cap is not None:
        lines.append(f"  .> cap:         {config.cluster_wide_cap} (cluster-wide)")
    names = sorted(app.tasks)
    lines.append("")
    lines.append(f"[tasks] ({len(names)} registered)")
    lines.extend(f"  . {escape_controls(name)}" for name in names)
    return "\n".join(lines)
