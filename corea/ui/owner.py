"""The owner sign-in box: a Hugging Face "Sign in" button on a Space with ``COREA_OWNERS``, an
owner-token field (``COREA_OWNER_TOKEN``, or the one-time token printed on the console), and a
line saying who this browser session is. A page opened with the console's ``?token=`` link signs
in on load. Rules in :mod:`corea.auth`.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..auth import Roles

__all__ = ["OwnerHandlers", "build_panel"]


class OwnerHandlers:
    """Args:
        roles: the app's :class:`corea.auth.Roles`.
    """

    def __init__(self, roles: Roles):
        self.roles = roles

    def status(self, request: gr.Request | None = None) -> str:
        """Who this browser session is, in one line."""
        who = self.roles.who(request)
        if who.owner:
            by = {"oauth": f"signed in with Hugging Face as **{who.name}**",
                  "token": "signed in with the owner token",
                  "in-process": "in-process"}.get(who.how, who.how)
            return f"**Owner** ({by}): every tab and every session's data."
        return "**Visitor**: you see, rate and export your own questions. " + self.roles.banner()

    def on_load(self, request: gr.Request | None = None) -> str:
        """Page load: sign in with the address's ``?token=`` when there is one; the status
        line."""
        tried = self.roles.sign_in_from_url(request)
        if tried is not None and not tried[0]:
            why = tried[1] if "Too many" in tried[1] else \
                "⚠️ The sign-in link's token is not valid (was the app restarted?)."
            return f"{why}  \n{self.status(request)}"
        return self.status(request)

    def sign_in(self, token: str, request: gr.Request | None = None):
        """Check the owner token; returns ``(status line, cleared token box)``."""
        _, msg = self.roles.sign_in(token, request)
        return f"{msg}  \n{self.status(request)}", ""

    def sign_out(self, request: gr.Request | None = None) -> str:
        self.roles.sign_out(request)
        return self.status(request)


def build_panel(h: OwnerHandlers, demo: gr.Blocks) -> SimpleNamespace:
    """The sign-in box (call inside the Blocks). Returns ``status`` (the markdown line) and
    ``events`` (the page load and the events that change the role; the app chains its view
    refresh on them)."""
    roles = h.roles
    events = []
    with gr.Accordion("Owner", open=False):
        status = gr.Markdown(elem_id="corea-owner-status")
        if roles.oauth_sign_in:
            gr.LoginButton()  # the page reloads signed in; demo.load below re-reads the role
        if roles.token_sign_in:
            with gr.Row():
                token = gr.Textbox(label="Owner token", type="password", scale=3,
                                   elem_id="corea-owner-token")
                sign_in = gr.Button("Sign in", scale=1, elem_id="corea-owner-sign-in")
                sign_out = gr.Button("Sign out", scale=1, elem_id="corea-owner-sign-out")
            events.append(sign_in.click(h.sign_in, [token], [status, token]))
            events.append(token.submit(h.sign_in, [token], [status, token],
                                       api_visibility="undocumented"))
            events.append(sign_out.click(h.sign_out, None, [status]))
    events.append(demo.load(h.on_load, None, [status], api_visibility="private"))
    return SimpleNamespace(status=status, events=events)
