"""The client groups file (billing/client_groups.py): who pays which tax rate and reads which template."""

import json
from pathlib import Path

import pytest

from aisyst_pipelines.billing.client_groups import (
    DEFAULT_CLIENT_GROUPS_FILE,
    BrandProfiles,
    TaxRateNotInStripe,
    load_client_groups,
    parse_client_groups,
)
from aisyst_pipelines.billing.invoice_lines import CustomField, InvoiceTemplate, invoice_branding
from aisyst_pipelines.templates import load_brand

GROUPS = load_client_groups()


def test_the_packaged_groups_are_the_guides() -> None:
    australia = GROUPS.for_country("au")
    assert (australia.name, australia.tax_rate) == ("Australia Clients", "au_gst")
    assert australia.template == InvoiceTemplate("GST included", "ABN: 12 345 678 901", (CustomField("Region", "APAC"),))
    us = GROUPS.for_country("US")
    assert (us.name, us.tax_rate, us.template.memo, us.template.footer) == ("US Clients", None, "Thank you!", "Terms: Net 30")
    assert GROUPS.for_country(None).key == GROUPS.for_country("DE").key == "other"
    assert GROUPS.tax_rate_keys == {"au_gst"}


def test_the_template_wins_over_the_brand_file_and_follows_our_fields() -> None:
    brand = load_brand()
    plain = invoice_branding("ACME-1", "Tier 1", "en", brand)
    templated = invoice_branding("ACME-1", "Tier 1", "en", brand, GROUPS.for_country("AU").template, ["txr_1"])
    assert [(f.name, f.value) for f in templated.custom_fields] == [("Client ID", "ACME-1"), ("Tier", "Tier 1"), ("Region", "APAC")]
    assert (templated.memo, templated.footer, templated.tax_rate_ids) == ("GST included", "ABN: 12 345 678 901", ("txr_1",))
    assert plain.memo.startswith("Thank you for choosing") and plain.tax_rate_ids == ()
    renamed = InvoiceTemplate(custom_fields=(CustomField("Tier", "Gold"),))  # a template field of our name replaces ours
    assert [(f.name, f.value) for f in invoice_branding("ACME-1", "Tier 1", "en", brand, renamed).custom_fields] == [
        ("Client ID", "ACME-1"), ("Tier", "Gold"),
    ]


def test_profiles_refuse_a_group_whose_tax_rate_is_not_in_stripe() -> None:
    profiles = BrandProfiles(load_brand(), GROUPS, {})
    with pytest.raises(TaxRateNotInStripe, match="bootstrap-stripe"):
        profiles.branding("AU-1", "Tier 1", "en", "AU")
    group, branding = BrandProfiles(load_brand(), GROUPS, {"au_gst": "txr_9"}).branding("AU-1", "Tier 1", None, "AU")
    assert (group.key, branding.tax_rate_ids) == ("australia", ("txr_9",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(groups=[]), "non-empty"),
        (lambda d: d.update(default_group="nowhere"), "default_group"),
        (lambda d: d["groups"][1].update(countries=["AU"]), "country AU is in client groups"),
        (lambda d: d["groups"][0].update(countries=["Australia"]), "two-letter"),
        (lambda d: d["groups"][0]["invoice"].update(custom_fields={"A": "1", "B": "2", "C": "3"}), "at most 2 fit"),
        (lambda d: d["groups"][0].pop("name"), "lacks the field 'name'"),
    ],
)
def test_a_broken_groups_file_is_a_clear_error(tmp_path: Path, change, message) -> None:
    document = json.loads(DEFAULT_CLIENT_GROUPS_FILE.read_text())
    change(document)
    with pytest.raises(ValueError, match=message):
        parse_client_groups(document)
