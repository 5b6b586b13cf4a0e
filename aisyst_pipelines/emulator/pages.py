"""The pages behind the URLs the emulator hands out: billing portal, hosted invoice, invoice PDF."""

from __future__ import annotations

import html
from typing import Any

from aisyst_pipelines.emulator.billing import money
from aisyst_pipelines.emulator.store import Store


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


def _portal(store: Store, session: dict[str, Any]) -> str:
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
