"""Hostile HTML in the free-text fields never gets stored; sanitising is idempotent."""

import random
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.content import sanitize_html
from tests.conftest import session_body

HTML_FIELDS = ["short_abstract", "long_abstract", "comments"]

# (hostile input, what is stored)
HOSTILE = [
    ("<script>alert(1)</script>Hello", "Hello"),
    ('<p onclick="steal()">Talk</p>', "<p>Talk</p>"),
    ('<img src=x onerror="alert(1)">', ""),
    ('<a href="javascript:alert(1)">x</a>', '<a rel="noopener noreferrer nofollow">x</a>'),
    ('<a href="JaVaScRiPt:alert(1)">x</a>', '<a rel="noopener noreferrer nofollow">x</a>'),
    ('<a href="&#106;avascript:alert(1)">x</a>', '<a rel="noopener noreferrer nofollow">x</a>'),
    (
        '<a href="data:text/html,<script>alert(1)</script>">x</a>',
        '<a rel="noopener noreferrer nofollow">x</a>',
    ),
    ("<svg><g/onload=alert(2)//<p>", ""),
    ('<iframe src="https://evil.example"></iframe>ok', "ok"),
    ("<style>body{display:none}</style>ok", "ok"),
    ('<p style="position:fixed">x</p>', "<p>x</p>"),
    ('<p lang="en" title="hover">x</p><b title="t">y</b>', "<p>x</p><b>y</b>"),  # a's only
    ('<form action="https://evil.example"><input name=p></form>', ""),
    ('<math><mi xlink:href="javascript:alert(1)">x</mi></math>', ""),
    ('<noscript><p title="</noscript><img src=x onerror=alert(1)>">', '&lt;p title=""&gt;'),
    ("<!-- <script>alert(1)</script> -->ok", "ok"),
]

# Survive as they are: the small safe subset.
SAFE = [
    "<p>A <strong>bold</strong> and <em>emphatic</em> talk</p>",
    "<ul><li>one</li><li>two</li></ul><ol><li>three</li></ol>",
    '<a href="https://example.org/a?b=1&amp;c=2" rel="noopener noreferrer nofollow">link</a>',
    '<a href="mailto:speaker@example.org" rel="noopener noreferrer nofollow">mail</a>',
    "<blockquote>quote</blockquote><pre><code>x = 1</code></pre><br>",
    "Plain text, with &amp; escaped &lt;angle&gt; brackets",
    # The Open Event Server's marks that carry meaning.
    "H<sub>2</sub>O and E=mc<sup>2</sup>, <u>underlined</u>, <s>gone</s> <strike>old</strike>",
]


@pytest.mark.parametrize("field", HTML_FIELDS)
@pytest.mark.parametrize(("hostile", "stored"), HOSTILE)
async def test_create_stores_hostile_html_sanitised(
    client: httpx.AsyncClient,
    connection: AsyncConnection,
    field: str,
    hostile: str,
    stored: str,
) -> None:
    response = await client.post("/sessions", json=session_body(**{field: hostile}))
    assert response.status_code == 201, response.text
    assert response.json()[field] == stored
    row = await connection.execute(
        text(f"SELECT {field} FROM sessions WHERE id = :id"), {"id": response.json()["id"]}
    )
    value = row.scalar_one()
    assert value == stored
    for needle in ("<script", "onerror", "onload", "onclick", "javascript:", "<iframe", "style="):
        assert needle not in value.lower()


@pytest.mark.parametrize("field", HTML_FIELDS)
async def test_patch_sanitises_too(client: httpx.AsyncClient, field: str) -> None:
    session = (await client.post("/sessions", json=session_body())).json()
    response = await client.patch(
        f"/sessions/{session['id']}", json={field: '<b onmouseover="x()">hi</b><script>x</script>'}
    )
    assert response.status_code == 200, response.text
    assert response.json()[field] == "<b>hi</b>"


@pytest.mark.parametrize("value", SAFE)
async def test_safe_subset_is_stored_unchanged(client: httpx.AsyncClient, value: str) -> None:
    response = await client.post("/sessions", json=session_body(long_abstract=value))
    assert response.json()["long_abstract"] == value


# Malformed markup that one pass of nh3 leaves in a form that parses differently again.
UNSETTLED = [
    "<pre>\n\nx</pre>",  # the parser drops a newline right after <pre>
    "<pre>\n\n\n\nx</pre>",
    "<pre>\r\n\nx</pre>",
    '<pre title="t" lang="en">\n\n\nx</pre>',  # an attribute on <pre> once hid the newline
    "<p><button><p>x",  # a <p> left inside a <p>
    "<ul><li><select><li>x</select></ul>",
    '<a href="http://x.org/1"><select><a href="http://x.org/2">y',
    "\ufeff\ufeff\ufeffx",  # the parser drops one leading byte order mark per pass
    "<span></span>\ufeff\ufeffx",
    "\ufeff<b></b>\ufeff<i></i>\ufeffx",
]


@pytest.mark.parametrize(
    "value", [hostile for hostile, _ in HOSTILE] + SAFE + UNSETTLED + ["a < b & c > d"]
)
def test_sanitising_is_idempotent(value: str) -> None:
    once = sanitize_html(value)
    assert sanitize_html(once) == once


def test_sanitising_random_tag_soup_is_idempotent() -> None:
    tags = ["p", "br", "b", "em", "ul", "li", "pre", "code", "a", "button", "select", "option"]
    tags += ["table", "td", "form", "textarea", "div", "svg", "math", "template", "nobr", "h1"]
    tags += ["sub", "sup", "u", "s", "strike"]
    bits = [
        "\n",
        "\n\n",
        " ",
        "x",
        "a&b",
        "<",
        ">",
        "&lt;",
        "\r\n",
        "<!-- c -->",
        '<a href="http://x.org">',
        "\ufeff",
    ]
    rng = random.Random(8)
    for _ in range(3000):
        parts = [rng.choice([f"<{rng.choice(tags)}>", f"</{rng.choice(tags)}>", rng.choice(bits)])]
        parts += [rng.choice([f"<{rng.choice(tags)}>", rng.choice(bits)]) for _ in range(10)]
        value = "".join(rng.sample(parts, len(parts)))
        once = sanitize_html(value)
        assert sanitize_html(once) == once, value


@pytest.mark.parametrize("value", UNSETTLED)
async def test_sending_back_sanitised_malformed_markup_is_no_change(
    client: httpx.AsyncClient, value: str
) -> None:
    session = (await client.post("/sessions", json=session_body(long_abstract=value))).json()
    response = await client.patch(
        f"/sessions/{session['id']}", json={"long_abstract": session["long_abstract"]}
    )
    assert response.status_code == 200
    assert response.json() == session  # same version, same last_modified_at


async def test_sending_back_a_sanitised_value_is_no_change(client: httpx.AsyncClient) -> None:
    fields: dict[str, Any] = {
        name: "<p onclick=x()>a & b <script>s</script></p>" for name in HTML_FIELDS
    }
    session = (await client.post("/sessions", json=session_body(**fields))).json()
    assert session["comments"] == "<p>a &amp; b </p>"
    response = await client.patch(f"/sessions/{session['id']}", json=session)
    assert response.status_code == 200
    assert response.json() == session  # same version, same last_modified_at


async def test_value_too_long_as_sent_is_422_though_shorter_once_sanitised(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    # As README says (and the spec's maxLength): a word processor's styles count as sent.
    styled = '<p style="font-family:Calibri,sans-serif;color:#333333">word</p>' * 200
    assert len(styled) > 10_000
    assert len(sanitize_html(styled)) < 10_000
    response = await client.post("/sessions", json=session_body(long_abstract=styled))
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert (error["location"], error["type"]) == (["body", "long_abstract"], "string_too_long")
    count = (await connection.execute(text("SELECT count(*) FROM sessions"))).scalar_one()
    assert count == 0


async def test_value_too_long_once_escaped_is_422(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    # 10,000 characters in, 40,000 once every "<" is escaped to "&lt;".
    response = await client.post("/sessions", json=session_body(comments="<" * 10_000))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["location"] == ["body", "comments"]
    count = (await connection.execute(text("SELECT count(*) FROM sessions"))).scalar_one()
    assert count == 0
