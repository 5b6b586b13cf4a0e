"""The pages behind the URLs the emulator hands out: billing portal, hosted invoice, invoice PDF.

The portal page lets the customer replace the card (a test token, attached and made the default as
Stripe's portal does): a subscription in dunning is then charged with it on its next retry.

The hosted invoice page and the PDF show what Stripe's do: the account's branding (logo, colour),
the customer, custom fields, memo, every line with its period, each tax by its rate's display name
("GST (10%)"), the totals and the footer.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from aisyst_pipelines.emulator.billing import money
from aisyst_pipelines.emulator.resources.customers import TEST_CARDS, attach_payment_method
from aisyst_pipelines.emulator.store import Store, diff
from aisyst_pipelines.emulator.wire import ApiError


def render_page(store: Store, path: str) -> tuple[str, bytes] | None:
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[1] == "portal":
        session = store.find("billing_portal.session", parts[2])
        return ("text/html; charset=utf-8", _portal(store, session).encode()) if session else None
    if len(parts) in (3, 4) and parts[1] == "invoices":
        invoice = store.find("invoice", parts[2])
        if invoice is None or invoice["status"] == "draft":
            return None
        if len(parts) == 4 and parts[3] == "pdf":
            return "application/pdf", _pdf(_invoice_text(store, invoice))
        return "text/html; charset=utf-8", _page(f"Invoice {invoice['number']}", _invoice_html(store, invoice)).encode()
    return None


def portal_action(store: Store, path: str, body: bytes) -> tuple[str, bytes] | None:
    """`POST /_emulator/portal/<session>/payment_method` (form field `payment_method`, a test token):
    the customer's new default card. Answers the portal page, with the outcome."""
    parts = path.strip("/").split("/")
    if len(parts) != 4 or parts[1] != "portal" or parts[3] != "payment_method":
        return None
    session = store.find("billing_portal.session", parts[2])
    if session is None:
        return None
    customer = store.tables["customer"][session["customer"]]
    token = (parse_qs(body.decode("utf-8")).get("payment_method") or [""])[0]
    try:
        method = attach_payment_method(store, token, customer, "payment_method")
    except ApiError as error:
        return "text/html; charset=utf-8", _portal(store, session, notice=f"Card not saved: {error.message}").encode()
    before = store.render(customer)
    customer["invoice_settings"]["default_payment_method"] = method["id"]
    store.emit("customer.updated", customer, previous_attributes=diff(before, store.render(customer)), clock_id=customer["test_clock"])
    notice = f"Card ending {method['card']['last4']} saved: it pays your next invoices and any past-due one on its next retry."
    return "text/html; charset=utf-8", _portal(store, session, notice=notice).encode()


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:sans-serif;max-width:48rem;margin:2rem auto'><h1>{html.escape(title)}</h1>{body}"
        "<p style='color:#888'>Stripe emulator (test mode)</p></body></html>"
    )


# The account's branding as Stripe's Dashboard settings hold it (Settings → Branding): the hosted page
# and the PDF show the logo and the colour. The emulator's account is Aisyst's.
ACCOUNT_BRANDING = {"primary_color": "#4338ca", "secondary_color": "#eef2ff", "logo_initials": "A"}


def _day(seconds: int | None) -> str:
    return "" if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d")


def _tax_name(store: Store, tax: dict[str, Any]) -> str:
    """A tax as Stripe prints it: its rate's display name and percentage, "GST (10%)"; "incl." when
    the amount is already inside the line amounts."""
    rate = store.tables["tax_rate"].get((tax.get("tax_rate_details") or {}).get("tax_rate") or "") or {}
    percentage = f"{Decimal(str(rate.get('percentage', 0))).normalize():f}%"
    inclusive = " incl." if tax.get("tax_behavior") == "inclusive" else ""
    return f"{rate.get('display_name') or 'Tax'} ({percentage}{inclusive})"


def _invoice_document(store: Store, invoice: dict[str, Any]) -> dict[str, Any]:
    """What both the hosted page and the PDF show, in the order a reader reads it."""
    currency = invoice["currency"]
    customer = store.tables["customer"].get(invoice["customer"]) or {}
    address = customer.get("address") or {}
    return {
        "account": invoice["account_name"],
        "number": invoice["number"],
        "status": invoice["status"],
        "issued": _day(invoice["status_transitions"]["finalized_at"]),
        "due": _day(invoice.get("due_date")),
        "bill_to": [v for v in (invoice.get("customer_name"), invoice.get("customer_email"), address.get("country")) if v],
        "fields": [(f["name"], f["value"]) for f in invoice.get("custom_fields") or []],
        "memo": invoice.get("description"),
        "lines": [
            (line["description"] or "", f"{_day(line['period']['start'])} – {_day(line['period']['end'])}", money(line["amount"], currency))
            for line in invoice["_lines"]
        ],
        "totals": [("Subtotal", money(invoice["subtotal"], currency))]
        + [(_tax_name(store, tax), money(tax["amount"], currency)) for tax in invoice["total_taxes"]]
        + [
            ("Total", money(invoice["total"], currency)),
            ("Amount paid", money(invoice["amount_paid"], currency)),
            ("Amount due", money(invoice["amount_remaining"], currency)),
        ],
        "footer": invoice.get("footer"),
    }


def _invoice_html(store: Store, invoice: dict[str, Any]) -> str:
    doc, e = _invoice_document(store, invoice), html.escape
    color, light = ACCOUNT_BRANDING["primary_color"], ACCOUNT_BRANDING["secondary_color"]
    logo = (
        f"<svg width='40' height='40' role='img' aria-label='logo'><rect width='40' height='40' rx='8' fill='{color}'/>"
        f"<text x='20' y='27' font-size='20' text-anchor='middle' fill='#fff'>{e(ACCOUNT_BRANDING['logo_initials'])}</text></svg>"
    )
    dates = f"Issued {doc['issued']}" + (f" · Due {doc['due']}" if doc["due"] else "")
    fields = "".join(f"<div>{e(name)}: <b>{e(value)}</b></div>" for name, value in doc["fields"])
    rows = "".join(
        f"<tr><td>{e(text)}<br><small style='color:#666'>{e(period)}</small></td><td style='text-align:right'>{e(amount)}</td></tr>"
        for text, period, amount in doc["lines"]
    )
    totals = "".join(
        f"<tr><td style='text-align:right'>{e(label)}</td><td style='text-align:right'>{e(amount)}</td></tr>"
        for label, amount in doc["totals"]
    )
    return (
        f"<div style='border-top:6px solid {color};padding-top:1rem;display:flex;gap:1rem;align-items:center'>{logo}"
        f"<b>{e(doc['account'])}</b></div>"
        f"<p>Status: <b>{e(doc['status'])}</b> · {e(dates)}</p>"
        f"<p>Bill to: {'<br>'.join(e(v) for v in doc['bill_to'])}</p>{fields}"
        + (f"<p style='background:{light};padding:.5rem'>{e(doc['memo'])}</p>" if doc["memo"] else "")
        + f"<table style='width:100%;border-collapse:collapse'>{rows}</table>"
        f"<table style='width:100%;border-top:1px solid {color}'>{totals}</table>"
        + (f"<p style='color:#666'>{e(doc['footer'])}</p>" if doc["footer"] else "")
    )


def _invoice_text(store: Store, invoice: dict[str, Any]) -> list[str]:
    doc = _invoice_document(store, invoice)
    lines = [doc["account"], f"Invoice {doc['number']}  ({doc['status']})  issued {doc['issued']}" + (f"  due {doc['due']}" if doc["due"] else "")]
    lines += ["Bill to: " + ", ".join(doc["bill_to"])] + [f"{name}: {value}" for name, value in doc["fields"]]
    if doc["memo"]:
        lines.append(doc["memo"])
    lines += [f"{text}  ({period})  {amount}" for text, period, amount in doc["lines"]]
    lines += [f"{label}  {amount}" for label, amount in doc["totals"]]
    if doc["footer"]:
        lines.append(doc["footer"])
    return lines


def _portal(store: Store, session: dict[str, Any], notice: str | None = None) -> str:
    customer = store.tables["customer"][session["customer"]]
    subscriptions = [s for s in store.tables["subscription"].values() if s["customer"] == customer["id"]]
    invoices = sorted(
        (i for i in store.tables["invoice"].values() if i["customer"] == customer["id"] and i["status"] != "draft"),
        key=lambda i: i["created"],
        reverse=True,
    )
    body = "<h2>Subscriptions</h2><ul>" + "".join(f"<li>{s['id']}: {s['status']}</li>" for s in subscriptions) + "</ul>"
    body += "<h2>Invoices</h2><ul>" + "".join(
        f"<li><a href='{html.escape(i['hosted_invoice_url'])}'>{i['number']}</a> "
        f"{money(i['total'], i['currency'])} {i['status']}</li>"
        for i in invoices
    ) + "</ul>"
    options = "".join(f"<option value='{token}'>{brand} ending {last4}</option>" for token, (brand, last4, _) in TEST_CARDS.items())
    body += (
        f"<h2>Payment method</h2><form method='post' action='/_emulator/portal/{html.escape(session['id'])}/payment_method'>"
        f"<select name='payment_method'>{options}</select> <button type='submit'>Update card</button></form>"
    )
    if notice:
        body = f"<p><b>{html.escape(notice)}</b></p>" + body
    if session.get("return_url"):
        body += f"<p><a href='{html.escape(session['return_url'])}'>Return</a></p>"
    return _page(f"Billing portal — {customer.get('name') or customer['id']}", body)


def _pdf(text_lines: list[str]) -> bytes:
    """A minimal one-page PDF with the given lines (enough for a viewer and a download test)."""

    def escape(text: str) -> str:
        return text.encode("latin-1", "replace").decode("latin-1").replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 11 Tf 50 780 Td 14 TL " + " ".join(f"({escape(t)}) '" for t in text_lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer << /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out
