"""Who may draw on the images API (helpers/serving_access.py): where the key comes from, how it is compared, and the
refusal to serve other machines without one."""

import pytest

from helpers.serving_access import API_KEY_VARIABLE, api_key_of, check_exposure, is_authorized


def test_the_key_comes_from_its_file_the_flag_or_the_environment(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret  \nsecond line ignored\n")
    assert api_key_of(key_file=key_file, environ={API_KEY_VARIABLE: "from-env"}) == "s3cret"
    assert api_key_of("flag", environ={API_KEY_VARIABLE: "from-env"}) == "flag"
    assert api_key_of(environ={API_KEY_VARIABLE: "from-env"}) == "from-env"
    assert api_key_of(environ={API_KEY_VARIABLE: ""}) is None and api_key_of(environ={}) is None


def test_an_empty_key_file_or_two_keys_are_refused(tmp_path):
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty: write the key on its first line"):
        api_key_of(key_file=tmp_path / "empty", environ={})
    with pytest.raises(ValueError, match="Give the API key once"):
        api_key_of("flag", tmp_path / "empty", environ={})


@pytest.mark.parametrize(("header", "allowed"), [("Bearer s3cret", True), ("Bearer s3cre", False), ("Bearer s3cretX", False),
                                                 ("s3cret", False), ("", False), (None, False), ("Bearer Ş3cret", False)])
def test_only_the_exact_bearer_key_is_authorized(header, allowed):
    assert is_authorized(header, "s3cret") is allowed
    assert is_authorized(header, None)  # no key: every request


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.7", "::", "pixart.example.org"])
def test_serving_other_machines_needs_a_key_or_insecure(host):
    with pytest.raises(ValueError, match=f"Serving on {host} without an API key .* or --insecure"):
        check_exposure(host, None)
    check_exposure(host, "s3cret")
    check_exposure(host, None, insecure=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_this_machine_alone_needs_no_key(host):
    check_exposure(host, None)
