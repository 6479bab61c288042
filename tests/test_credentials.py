import pytest
from multidict import CIMultiDict

from keystile.core.credentials import ConflictingCredentials, CredentialSource, extract


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((), None),
        ((("Authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer   abc  "),), "abc"),
        ((("Authorization", "Basic dXNlcjpwYXNz"),), None),
        ((("x-api-key", "abc"),), "abc"),
        ((("X-API-KEY", "abc"), ("Authorization", "Bearer abc")), "abc"),
        ((("Authorization", "Bearer "),), None),
        ((("Authorization", "Basic zz"), ("x-api-key", "abc")), "abc"),
    ],
)
def test_extract(pairs: tuple[tuple[str, str], ...], expected: str | None) -> None:
    assert extract(headers(*pairs)) == expected


@pytest.mark.parametrize(
    "pairs",
    [
        (("Authorization", "Bearer abc"), ("x-api-key", "xyz")),
        (("x-api-key", "abc"), ("x-api-key", "xyz")),
        (("Authorization", "Bearer abc"), ("Authorization", "Bearer xyz")),
    ],
)
def test_two_different_keys_conflict(pairs: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(ConflictingCredentials):
        extract(headers(*pairs))


def test_configured_sources() -> None:
    sources = (CredentialSource.parse("X-Token"),)
    assert extract(headers(("x-token", "abc"), ("x-api-key", "other")), sources) == "abc"
    assert CredentialSource.parse(" Authorization ").bearer
