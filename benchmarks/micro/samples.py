"""Realistic inputs for the micro-benchmarks, made here so every run uses the same bytes.

Two HTML emails shaped like what template services ship: ``welcome_html`` (~2 KB: a short
``<style>``, a table layout, a heading, a button link and an unsubscribe footer) and
``digest_html`` (~40 KB with the default 40 items: the big ``<style>`` of a responsive
template, a hidden preheader, nested tables with inline styles, an image, a link and a price per
item, a list, entities). Both are ASCII with entities, like the output of common email builders.
"""

from __future__ import annotations

from email_worker.ports import OutgoingEmail, RenderedEmail

UNSUBSCRIBE = "https://example.com/u/9f8e7d6c5b4a39281706f5e4d3c2b1a0?list=weekly&lang=en"
_CELL = 'style="padding:0 24px;font-family:Helvetica,Arial,sans-serif;font-size:15px;color:#333"'
_STYLE_RULE = (
    ".col-{n}{{width:{w}px!important;max-width:{w}px!important}}"
    "@media only screen and (max-width:{w}px){{.col-{n}{{width:100%!important}}"
    ".hide-{n}{{display:none!important;mso-hide:all}}}}\n"
)


def _document(title: str, style: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head>\n'
        '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{title}</title>\n<style type="text/css">\n{style}</style>\n</head>\n'
        '<body style="margin:0;padding:0;background:#f4f4f4">\n'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">'
        f"\n{body}</table>\n</body></html>\n"
    )


def _footer() -> str:
    return (
        f'<tr><td {_CELL}><p style="font-size:12px;color:#888">You receive this email because '
        "you have an account at Example&nbsp;Inc. &copy; 2026 Example Inc., 1 Main Street, "
        f'Springfield.<br><a href="{UNSUBSCRIBE.replace("&", "&amp;")}">Unsubscribe</a> '
        '&middot; <a href="https://example.com/privacy">Privacy policy</a></p></td></tr>\n'
    )


def welcome_html(name: str = "Ada") -> str:
    """A ~2 KB sign-up confirmation."""
    style = "body{margin:0}a{color:#0b5cff}.button{padding:12px 20px;border-radius:4px}\n"
    body = (
        f'<tr><td {_CELL}><h1 style="font-size:22px">Welcome to Example, {name}!</h1>\n'
        "<p>Thanks for signing up. Please confirm your email address by following the link "
        "below; it stays valid for 24&nbsp;hours.</p>\n"
        '<p><a class="button" href="https://example.com/confirm?token=3f9a1c2e7b&amp;u=42" '
        'style="background:#0b5cff;color:#fff;text-decoration:none">Confirm my address</a>'
        "</p>\n<p>If you did not sign up, you can ignore this message: nothing happens until "
        'the address is confirmed.</p>\n<h2 style="font-size:17px">What you can do next</h2>'
        '<ul><li>Complete your <a href="https://example.com/profile">profile</a></li>'
        "<li>Invite your team&nbsp;&ndash; the first five seats are free</li>"
        '<li>Read the <a href="https://example.com/guide">getting-started guide</a></li></ul>'
        "\n<p>&mdash; The Example team</p></td></tr>\n" + _footer()
    )
    return _document("Welcome to Example", style, body)


def _item(n: int) -> str:
    return (
        f'<tr><td {_CELL}><table role="presentation" width="100%" cellpadding="0" '
        'cellspacing="0" border="0"><tr>\n'
        f'<td class="col-{n % 8}" width="96" valign="top"><img src="https://cdn.example.com/'
        f'p/{n}.jpg" width="96" height="96" alt="Product {n}" style="display:block;border:0">'
        '</td>\n<td valign="top" style="padding-left:16px">'
        f'<h3 style="margin:0 0 4px;font-size:16px"><a href="https://example.com/p/{n}?utm_'
        f'source=digest&amp;utm_medium=email" style="color:#111;text-decoration:none">'
        f"Handmade ceramic mug no.&nbsp;{n}</a></h3>\n"
        f'<p style="margin:0;color:#555">Glazed by hand in small batches; holds 350&nbsp;ml, '
        "dishwasher safe. <strong>Only a few left</strong> &ndash; order soon.</p></td>\n"
        f'<td width="80" align="right" valign="top" style="font-weight:bold">'
        f"&euro;{12 + n % 30}.90</td></tr></table></td></tr>\n"
    )


def digest_html(items: int = 40) -> str:
    """A weekly digest of ``items`` products: ~40 KB with the default 40."""
    style = "".join(_STYLE_RULE.format(n=n, w=120 + 20 * n) for n in range(items))
    body = (
        '<tr><td><div style="display:none;max-height:0;overflow:hidden">This week: new mugs, '
        "bowls and plates &zwnj;&nbsp;&zwnj;&nbsp;</div></td></tr>\n"
        f"<tr><td {_CELL}><h1>Your weekly picks</h1><p>Hello Ada, here is what is new this "
        "week:</p><ul><li>Free shipping over &euro;50</li><li>Gift wrapping</li></ul></td></tr>"
        "\n" + "".join(_item(n) for n in range(items)) + _footer()
    )
    return _document("Your weekly picks", style, body)


def outgoing(html: str, text: str) -> OutgoingEmail:
    """The email the mailer builds for ``html`` and its text part: ASCII addresses, a
    ``List-Unsubscribe`` URL, a generated-looking Message-ID."""
    return OutgoingEmail(
        sender="notifications@example.com",
        recipient="ada.lovelace@example.org",
        message_id="<3c1e9b2a7f6d4e58a0b1c2d3e4f50617@mail.example.com>",
        content=RenderedEmail(
            subject="Welcome to Example, Ada",
            html=html,
            text=text,
            template_code="welcome",
            template_version="7",
            list_unsubscribe=f"<{UNSUBSCRIBE}>",
        ),
    )
