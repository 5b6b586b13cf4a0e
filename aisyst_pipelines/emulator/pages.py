"""The pages behind the URLs the emulator hands out: billing portal, hosted invoice, invoice PDF.

The portal page lets the customer replace the card (a test token, attached and made the default as
Stripe's portal does): a subscription in dunning is then charged with it on its next retry.
"""

from __future__ import annotations

import html
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
            return "application/pdf", _pdf(_invoice_text(invoice))
        return "text/html; charset=utf-8", _page(f"Invoice {invoice['number']}", _invoice_html(invoice)).encode()
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


def _invoice_html(invoice: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(line['description'] or '')}</td><td>{money(line['amount'], invoice['currency'])}</td></tr>"
        for line in invoice["_lines"]
    )
    taxes = sum(t["amount"] for t in invoice["total_taxes"])
    return (
        f"<p>Status: <b>{invoice['status']}</b></p><table>{rows}</table>"
        f"<p>Subtotal {money(invoice['subtotal'], invoice['currency'])} · Tax {money(taxes, invoice['currency'])} · "
        f"Total <b>{money(invoice['total'], invoice['currency'])}</b> · Amount due {money(invoice['amount_due'], invoice['currency'])}</p>"
        + (f"<p>{html.escape(invoice['footer'])}</p>" if invoice.get("footer") else "")
    )


def _invoice_text(invoice: dict[str, Any]) -> list[str]:
    lines = [f"Invoice {invoice['number']}  ({invoice['status']})"]
    lines += [f"{line['description'] or ''}  {money(line['amount'], invoice['currency'])}" for line in invoice["_lines"]]
    lines.append(f"Total {money(invoice['total'], invoice['currency'])}")
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
