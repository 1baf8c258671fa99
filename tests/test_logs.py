"""Secret masking in `appliance.logs`: every URL form of a registered secret is masked."""

from __future__ import annotations

import pytest

from appliance.logs import MASK, redact, register_secret, secret_forms


@pytest.mark.parametrize(
    ("registered", "seen"),
    [
        # a signed URL's token as it is in the URL, seen decoded or re-encoded
        ("tok%2Ben%2Fsig%3D%3D", "tok+en/sig=="),
        ("tok%2Ben%2Fsig%3D%3D", "tok%2ben%2fsig%3d%3d"),
        ("plus+sign+token", "plus sign token"),
        # a secret registered decoded, seen percent-encoded (in a URL or a quoted error)
        ("sk_key/with+chars=", "sk_key%2Fwith%2Bchars%3D"),
        ("sk_key/with+chars=", "sk_key%2fwith%2bchars%3d"),
        ("sk_key/with+chars=", "sk_key/with%2Bchars%3D"),
    ],
)
def test_every_url_form_of_a_secret_is_masked(registered: str, seen: str) -> None:
    register_secret(registered)
    assert redact(f"url=wss://x/?t={seen}&x=1") == f"url=wss://x/?t={MASK}&x=1"


def test_forms_of_a_plain_secret_are_just_the_secret() -> None:
    assert secret_forms("sk_plain_0123") == {"sk_plain_0123"}
    assert all(len(form) >= 4 for form in secret_forms("a%2Bb"))
