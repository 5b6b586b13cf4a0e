"""jinja2 templates (alert e-mails, invoice texts) and the brand settings they all share.

The brand lives in ONE file, `brand.json` beside this module (or the file named by
AISYST_BRAND_FILE, see `Settings.brand_file`): company name, support and sender addresses,
registration and tax text. Customer e-mails and invoice annotations read it through `load_brand`,
so a rebrand is one edit.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from aisyst_pipelines.billing.formatting import DEFAULT_LOCALE, format_money, format_number

TEMPLATES_DIR = Path(__file__).parent
DEFAULT_BRAND_FILE = TEMPLATES_DIR / "brand.json"


@dataclass(frozen=True)
class Brand:
    company_name: str
    legal_name: str
    support_email: str
    email_from: str  # From: of customer and ops e-mail, "Name <address>"
    ops_email: str  # default recipient of ops alerts and digests (AISYST_OPS_EMAIL overrides)
    website_url: str
    portal_return_url: str  # where the Stripe customer portal sends the customer back
    postal_address: str
    registration_text: str
    tax_text: str
    accent_color: str

    def as_template_context(self) -> dict[str, str]:
        return asdict(self)


def load_brand(path: Path | str | None = None) -> Brand:
    """The brand settings from `path` (default: the packaged brand.json). Unknown or missing keys
    are an error: a typo must not silently blank a footer."""
    source = Path(path) if path is not None else DEFAULT_BRAND_FILE
    data = json.loads(source.read_text(encoding="utf-8"))
    names = {f.name for f in fields(Brand)}
    missing, unknown = names - data.keys(), data.keys() - names
    if missing or unknown:
        raise ValueError(f"brand file {source}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return Brand(**{name: str(data[name]) for name in names})


def pick_locale(preferred_locale: str | None, available: Collection[str]) -> str:
    """The template folder for a customer's preferred locale: "de-DE" → "de", "pt-BR" → "en" (when
    there is no Portuguese), None → "en". An exact folder ("pt-br") wins over the language."""
    if preferred_locale:
        tag = preferred_locale.strip().lower().replace("_", "-")
        for candidate in (tag, tag.split("-")[0]):
            if candidate in available:
                return candidate
    return DEFAULT_LOCALE


@cache
def locale_folders(folder: str, template: str) -> frozenset[str]:
    """The locales of `folder` (relative to this one) that have `template`: one subfolder per locale."""
    return frozenset(p.name for p in (TEMPLATES_DIR / folder).iterdir() if (p / template).is_file())


def format_minutes(value: int | None, locale: str | None = DEFAULT_LOCALE) -> str:
    """1234 → "1,234" in English, "1.234" in German (minutes are whole numbers; None stands for unlimited)."""
    return "unlimited" if value is None else format_number(value, locale)


def _autoescape(template_name: str | None) -> bool:
    # Templates are named `<name>.html.j2` / `<name>.txt.j2`: escape HTML only.
    return template_name is not None and ".html" in template_name


@cache
def template_environment() -> Environment:
    """The one jinja2 environment: StrictUndefined so a missing value fails instead of printing ''."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=_autoescape,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["minutes"] = format_minutes
    environment.filters["money"] = format_money
    return environment


def render(template_name: str, **context: Any) -> str:
    """Render `template_name` (path relative to this folder) with `context`."""
    return template_environment().get_template(template_name).render(**context)
