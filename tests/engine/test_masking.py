"""The one masking policy (``engine.masking``): what a reader without ``pii:read`` sees of
each kind of field, and of the same lead in a JSON, form-encoded or XML request body."""

from __future__ import annotations

import pytest

from engine.masking import field_kind, for_reader, mask_pii, mask_text

LEAD = {
    "lead.email": "ada.lovelace@example.com",
    "lead.phone_1": "(512) 555-0147",
    "lead.ssn": "123-45-6789",
    "lead.dob": "1990-02-03",
    "lead.first_name": "Ada",
    "lead.last_name": "Lovelace",
    "lead.address_1": "12 Analytical Way",
    "lead.state": "TX",
    "lead.postal_code": "78701",
}
CLEAR = ("ada.lovelace", "555-0147", "5550147", "123-45", "02-03", "Lovelace", "Analytical")


def test_field_types_decide_the_mask() -> None:
    assert mask_pii(LEAD) == {
        "lead.email": "a***@example.com",
        "lead.phone_1": "512-***-****",  # the area code stays: where, not who
        "lead.ssn": "***-**-6789",
        "lead.dob": "1990-**-**",
        "lead.first_name": "A***",
        "lead.last_name": "L***",
        "lead.address_1": "***",
        "lead.state": "TX",
        "lead.postal_code": "78701",
    }


def test_a_pii_fields_identifying_parts_are_masked_and_its_harmless_parts_kept() -> None:
    assert field_kind("lead.phone_1.line") == "part"
    assert field_kind("lead.email.domain") is None
    assert field_kind("lead.phone_1.area") is None
    assert field_kind("step_name") is None and field_kind("flow.name") is None


@pytest.mark.parametrize(
    "body",
    [
        '{"first_name": "Ada", "last_name": "Lovelace", "email": "ada.lovelace@example.com",'
        ' "phone_1": "512-555-0147", "ssn": "123-45-6789", "dob": "1990-02-03",'
        ' "address_1": "12 Analytical Way"}',
        "first_name=Ada&last_name=Lovelace&email=ada.lovelace%40example.com"
        "&phone_1=5125550147&ssn=123456789&dob=1990-02-03&address_1=12+Analytical+Way",
        "<lead><first_name>Ada</first_name><last_name>Lovelace</last_name>"
        "<email>ada.lovelace@example.com</email><phone_1 kind='home'>512 555 0147</phone_1>"
        "<ssn>123-45-6789</ssn><dob>1990-02-03</dob><address_1>12 Analytical Way</address_1>"
        "</lead>",
    ],
    ids=["json", "form", "xml"],
)
def test_a_recorded_body_is_masked_alike_in_each_format(body: str) -> None:
    masked = mask_text(body)
    for clear in CLEAR:
        assert clear not in masked
    assert "512" in masked  # the area code


def test_free_text_loses_emails_phones_and_ssns_but_not_ids_or_zip_codes() -> None:
    assert mask_text("Rule failed: email ada@x.io, phone +1 512.555.0147, ssn 123-45-6789") == (
        "Rule failed: email a***@x.io, phone 512-***-****, ssn ***-**-6789"
    )
    assert mask_text("lead 01KBM7Y2 at 1764000000002, zip 78701") == (
        "lead 01KBM7Y2 at 1764000000002, zip 78701"
    )


def test_pii_read_sees_clear_text_and_nobody_sees_secrets() -> None:
    event = {"vars": LEAD, "request": {"headers": {"X-API-Key": "k", "Accept": "*/*"}}}
    clear = for_reader(event, sees_pii=True)
    assert clear["vars"] == LEAD
    assert clear["request"]["headers"] == {"X-API-Key": "***", "Accept": "*/*"}
    assert "ada.lovelace" not in str(for_reader(event, sees_pii=False))
